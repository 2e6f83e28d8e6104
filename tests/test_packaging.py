"""The installed layout: namespaced packages only, and every package folder listed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAPPING = {"ezrunner": "ezrunner", "core": "ezrunner.core", "tui": "ezrunner.tui", "images": "ezrunner.images"}


def test_every_package_folder_is_listed_in_pyproject():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for folder, dotted in MAPPING.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([dotted, *rel.parts]) if rel.parts else dotted)
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == set()


def test_bare_core_and_tui_are_not_importable_outside_the_repo():
    code = (
        "import importlib.util, json\n"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in ['core', 'tui', 'images']}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == '{"core": false, "tui": false, "images": false}'


def test_namespaced_modules_resolve_to_the_repo_folders():
    code = (
        "import ezrunner.core.errors, ezrunner.tui.app, ezrunner.images\n"
        "print(ezrunner.core.errors.__file__); print(ezrunner.tui.app.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    core_file, tui_file = out.stdout.split()
    assert Path(core_file).resolve() == REPO / "core" / "errors.py"
    assert Path(tui_file).resolve() == REPO / "tui" / "app.py"


def test_vllm_is_never_a_host_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    every = list(project["dependencies"]) + [d for ds in project["optional-dependencies"].values() for d in ds]
    assert not [d for d in every if d.lower().startswith("vllm")]
    serve_only = ("torch", "transformers", "fastapi", "uvicorn")
    assert not [d for d in project["dependencies"] if d.lower().startswith(serve_only)]
