"""The wheelhouse: pip download's argv, the cache and failure handling, with a fake pip
(recorded at 67b4606, before ensure_wheelhouse was split)."""

from __future__ import annotations

import io
import sys

import pytest
from ezrunner.core import wheelhouse
from ezrunner.core.errors import EzError
from ezrunner.core.events import LogLines, PhaseFinished, PhaseStarted


class FakePip:
    """Stands in for ``subprocess.Popen``: records the argv, prints lines, writes a wheel."""

    def __init__(self, lines=("Collecting x", "Saved ./x.whl"), rc=0):
        self.lines, self.rc, self.calls = lines, rc, []

    def __call__(self, cmd, **kw):
        self.calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        if self.rc == 0:
            with open(f"{dest}/x-1.0-py3-none-any.whl", "w") as fh:
                fh.write("wheel")
        fake = self

        class Proc:
            stdout = io.StringIO("".join(f"{line}\n" for line in fake.lines))

            def wait(self):
                return fake.rc

        return Proc()


def test_downloads_then_reuses_the_cache(tmp_path, monkeypatch):
    pip = FakePip()
    monkeypatch.setattr(wheelhouse.subprocess, "Popen", pip)
    items = list(wheelhouse.ensure_wheelhouse(["somepkg-not-installed>=1"], root=tmp_path))
    wh = items[-1]
    assert isinstance(wh, wheelhouse.Wheelhouse)
    assert [type(i) for i in items] == [PhaseStarted, LogLines, LogLines, PhaseFinished, wheelhouse.Wheelhouse]
    assert [i.lines for i in items if isinstance(i, LogLines)] == [("Collecting x",), ("Saved ./x.whl",)]
    key = wheelhouse.wheelhouse_key(["somepkg-not-installed>=1"], "3.11", "manylinux_2_28_x86_64")
    assert wh.path == tmp_path / key and wh.requirements == ("somepkg-not-installed>=1",)
    assert (wh.path / ".complete").read_text() == "ok\n"
    assert wh.requirements_file.read_text() == "somepkg-not-installed>=1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [key]
    plats = [f"manylinux_2_{m}_x86_64" for m in range(28, 16, -1)] + ["manylinux2014_x86_64", "linux_x86_64"]
    expect = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
        "--abi", "abi3", "--abi", "none",
    ]
    for p in plats:
        expect += ["--platform", p]
    tmp = tmp_path / f".{key}.tmp-{__import__('os').getpid()}"
    expect += ["-d", str(tmp), "-r", str(tmp / "requirements.txt")]
    assert pip.calls == [expect]
    again = list(wheelhouse.ensure_wheelhouse(["somepkg-not-installed>=1"], root=tmp_path))
    assert again == [wh] and len(pip.calls) == 1


def test_other_platform_has_no_extra_tags(tmp_path, monkeypatch):
    pip = FakePip()
    monkeypatch.setattr(wheelhouse.subprocess, "Popen", pip)
    list(wheelhouse.ensure_wheelhouse(["a-pkg"], root=tmp_path, platform="macosx_11_0_arm64", python_version="3.12"))
    cmd = pip.calls[0]
    assert [cmd[i + 1] for i, x in enumerate(cmd) if x == "--platform"] == ["macosx_11_0_arm64"]
    assert "cp312" in cmd


def test_pip_failure_names_the_last_line_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(wheelhouse.subprocess, "Popen", FakePip(lines=("x", "ERROR: No matching distribution", ""), rc=1))
    with pytest.raises(EzError) as e:
        list(wheelhouse.ensure_wheelhouse(["a-pkg"], root=tmp_path))
    assert e.value.message == "could not download the image's Python wheels: ERROR: No matching distribution"
    assert "PyPI" in e.value.hint
    assert list(tmp_path.iterdir()) == []


def test_an_incomplete_wheelhouse_is_replaced(tmp_path, monkeypatch):
    key = wheelhouse.wheelhouse_key(["a-pkg"], "3.11", "manylinux_2_28_x86_64")
    (tmp_path / key).mkdir()
    (tmp_path / key / "stale.whl").write_text("old")
    monkeypatch.setattr(wheelhouse.subprocess, "Popen", FakePip())
    wh = list(wheelhouse.ensure_wheelhouse(["a-pkg"], root=tmp_path))[-1]
    assert sorted(p.name for p in wh.path.iterdir()) == [".complete", "requirements.txt", "x-1.0-py3-none-any.whl"]
