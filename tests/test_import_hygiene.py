"""Startup hygiene: the TUI and ``--help`` must not pull inference-weight modules.

Runs in a fresh subprocess, because this test process has imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import EZRUNNER

HEAVY = ("torch", "transformers", "vllm", "fastapi", "uvicorn")
# Not forbidden by the spec for --help, but they are lazy by design: keep them so.
LAZY = ("docker", "huggingface_hub", "modelscope", "pynvml")


def _loaded_after(code: str) -> list[str]:
    probe = (
        code
        + "\nimport sys, json\n"
        + f"print(json.dumps(sorted(m for m in {HEAVY + LAZY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_tui_app_stays_light():
    assert _loaded_after("import ezrunner.tui.app") == []


def test_help_stays_light():
    code = (
        "import contextlib, io\n"
        "from ezrunner.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    assert _loaded_after(code) == []


def test_every_subcommand_help_stays_light():
    from ezrunner.cli import build_parser

    parser = build_parser()
    names = sorted(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert names, "no subcommands registered"
    for name in names:
        code = (
            "import contextlib, io\n"
            "from ezrunner.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            f"        main([{name!r}, '--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
        )
        assert [m for m in _loaded_after(code) if m in HEAVY] == [], name


def test_importing_the_package_loads_nothing_heavy():
    assert _loaded_after("import ezrunner, ezrunner.core, ezrunner.images") == []


def test_console_script_help_runs():
    out = subprocess.run([EZRUNNER, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "usage: ezrunner" in out.stdout


def test_no_json_garbage():
    # Guard the probe itself: a module that prints at import would break parsing.
    assert json.loads(json.dumps([])) == []
