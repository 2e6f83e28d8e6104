"""The command line: version, help, error shape and exit codes."""

from __future__ import annotations

import subprocess

from conftest import EZRUNNER

from ezrunner import __version__
from ezrunner.cli import COMMAND_MODULES, build_parser, main


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EZRUNNER, *args], capture_output=True, text=True, **kw)


def test_version():
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"ezrunner {__version__}"


def test_help_lists_only_registered_commands():
    out = run("--help")
    assert out.returncode == 0
    choices = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    for name in choices:
        assert name in out.stdout
    assert len(COMMAND_MODULES) >= 1


def test_unknown_command_is_a_usage_error():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_user_error_is_one_line_without_traceback(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    out = run("demo-model", str(tmp_path / "x"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("ezrunner: error: ")
    assert (tmp_path / "x" / "f").read_text() == "keep me"  # nothing lost


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("keep me")
    out = run("--debug", "demo-model", str(tmp_path / "x"))
    assert out.returncode != 0
    assert "Traceback" in out.stderr


def test_bad_preset_names_the_flag(tmp_path, capsys):
    assert main(["demo-model", str(tmp_path / "m"), "--preset", "huge"]) == 2
    err = capsys.readouterr().err
    assert "--preset" in err and "huge" in err
    assert not (tmp_path / "m").exists()
