"""Pack faults without Docker (issue 14, items 13, 14, 15 and the sidecar's mode):
the bundle writer on fixed inputs, with the fault injected where it happens."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from ezrunner.core.bundle import writer as W
from ezrunner.core.errors import EzError
from support_pack import golden_contents


def _write(tmp_path: Path, out: Path, *, part_size=None, check=lambda: None, contents=None):
    contents = contents or golden_contents(tmp_path)
    return W.BundleWriter(contents, out, part_size=part_size, check=check, emit=lambda e: None).write()


def _old_bundle(out: Path) -> dict[str, bytes]:
    (out / "b.tar").write_bytes(b"old bundle")
    (out / "b.tar.sha256").write_text("0" * 64 + "  b.tar\n")
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_disk_full_at_the_sidecar_keeps_the_old_bundle_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    before = _old_bundle(out)

    def full(path, text):
        Path(path).write_text(text[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(W, "write_sidecar", full)
    with pytest.raises(EzError, match="the disk is full while writing b.tar; nothing was left behind"):
        _write(tmp_path, out / "b.tar")
    assert _files(out) == before  # the old bundle and its sidecar, untouched; no temporaries


def test_the_sidecar_is_written_before_the_bundle_is_renamed_into_place(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _old_bundle(out)
    seen = []
    real_replace = os.replace

    def watch(src, dst):
        seen.append((Path(src).name, Path(dst).name, sorted(p.name for p in out.iterdir())))
        real_replace(src, dst)

    monkeypatch.setattr(W.os, "replace", watch)
    _write(tmp_path, out / "b.tar")
    first_src, first_dst, present = seen[0]
    assert first_dst == "b.tar" and f".b.tar.sha256.ezpack-{os.getpid()}.tmp" in present
    assert seen[-1][1] == "b.tar.sha256"


def test_a_new_bundle_replaces_an_old_split_one_completely(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i in (1, 2, 3, 4, 5):
        (out / f"b.tar.part-{i:03d}").write_bytes(b"old")
    (out / "b.tar.sha256").write_text("0" * 64 + "  b.tar\n")
    written = _write(tmp_path, out / "b.tar", part_size=1 << 20)
    assert sorted(p.name for p in out.iterdir()) == ["b.tar.part-001", "b.tar.part-002", "b.tar.part-003", "b.tar.sha256"]
    assert (out / "b.tar.sha256").read_text().startswith(written.sha256)


def test_the_sidecar_has_the_bundles_mode(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = os.umask(0o022)
    try:
        written = _write(tmp_path, out / "b.tar")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(written.sidecar).st_mode)
    assert mode == stat.S_IMODE(os.stat(written.bundle).st_mode) == 0o644


@pytest.mark.parametrize("change", ["same-size", "touched", "replaced"])
def test_a_model_file_changed_while_packing_is_one_line_and_no_bundle(tmp_path, change):
    out = tmp_path / "out"
    out.mkdir()
    contents = golden_contents(tmp_path)
    weights = contents.model_folder / "model.safetensors"
    calls = [0]

    def meddle():
        calls[0] += 1
        if calls[0] != 2:
            return
        if change == "same-size":
            with open(weights, "r+b") as fh:
                fh.write(b"X" * 100)
        elif change == "touched":
            os.utime(weights, (1_800_000_000, 1_800_000_000))
        else:
            tmp = weights.with_name("new")
            tmp.write_bytes(weights.read_bytes())
            os.replace(tmp, weights)

    with pytest.raises(EzError, match=r"^the model file model\.safetensors changed while it was being packed"):
        _write(tmp_path, out / "b.tar", check=meddle, contents=contents)
    assert list(out.iterdir()) == []


def test_stale_sidecar_temporaries_of_dead_packs_are_removed(tmp_path):
    target = tmp_path / "b.tar"
    stale = tmp_path / ".b.tar.sha256.ezpack-999999999.tmp"
    stale.write_text("x")
    W.clean_stale_temporaries(target)
    assert not stale.exists()


def _remote_code_model(root: Path) -> Path:
    folder = root / "custom-model"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "custom", "architectures": ["CustomForCausalLM"], '
        '"auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}}')
    (folder / "modeling_custom.py").write_text("import os\n")
    return folder


def test_a_model_that_needs_remote_code_is_refused_without_the_flag(tmp_path):
    from ezrunner.core.errors import UsageError
    from ezrunner.core.pack import PackOptions, iter_pack

    folder = _remote_code_model(tmp_path)
    options = PackOptions(str(folder), tmp_path / "b.tar", plan={"engine": "transformers", "device": "cpu", "fits": True},
                          engine="transformers", device="cpu", client=object())
    with pytest.raises(UsageError, match=r"needs its own Python code \(config\.json has auto_map\)") as exc:
        for _event in iter_pack(options):
            pass
    assert "--trust-remote-code" in exc.value.hint and exc.value.exit_code == 2
    assert not (tmp_path / "b.tar").exists()


def test_trust_remote_code_reaches_the_serve_command_of_each_engine(tmp_path):
    from ezrunner.core.engines import ENGINE_TABLE, ServeRequest
    from ezrunner.core.pack import needs_remote_code

    assert needs_remote_code(_remote_code_model(tmp_path))
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / "config.json").write_text('{"text_config": {"auto_map": {"AutoConfig": "x.Y"}}}')
    assert needs_remote_code(nested)
    (nested / "config.json").write_text('{"model_type": "llama"}')
    assert not needs_remote_code(nested)
    for spec in ENGINE_TABLE:
        plan = {"engine": spec.engine, "device": spec.device, "max_model_len": 128}
        assert "--trust-remote-code" in spec.serve_argv(ServeRequest("m", plan, trust_remote_code=True))
        assert "--trust-remote-code" not in spec.serve_argv(ServeRequest("m", plan))


def test_cli_pack_refuses_remote_code_in_one_line(tmp_path, docker_engine):
    import subprocess

    from conftest import EZRUNNER

    folder = _remote_code_model(tmp_path)
    proc = subprocess.run([EZRUNNER, "pack", str(folder), "-o", str(tmp_path / "b.tar"), "--cpu-only"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ezrunner: error:")]
    assert len(errors) == 1 and errors[0].startswith("ezrunner: error: custom-model needs its own Python code")
    assert "Traceback" not in proc.stderr
