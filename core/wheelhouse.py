"""The wheelhouse: every Python dependency of an engine image, downloaded on the host
with ``pip download`` for the IMAGE's Python version and platform, so that no
``RUN`` step in the image build needs the network.

Wheelhouses are cached under ``locations.home()/wheelhouse/<key>`` where the key
hashes the requirement lines, the Python version and the platform. A finished
wheelhouse holds a ``requirements.txt`` (the exact pins it was made for) and a
``.complete`` marker; a half-finished one is never used.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ezrunner.core import locations
from ezrunner.core.errors import EzError
from ezrunner.core.events import Event, LogLines, PhaseFinished, PhaseStarted

# The embedded server's needs when images/server/requirements.txt is absent.
DEFAULT_SERVER_REQUIREMENTS = (
    "fastapi",
    "uvicorn",
    "transformers",
    "torch",
    "safetensors",
    "prometheus-client",
    "tokenizers",
)

DEFAULT_PYTHON = "3.11"
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def server_requirements_file() -> Path:
    """``images/server/requirements.txt``."""
    from ezrunner import images

    return Path(images.__file__).resolve().parent / "server" / "requirements.txt"


def server_requirements() -> list[str]:
    """The requirement lines of the embedded server (comments dropped)."""
    path = server_requirements_file()
    if path.is_file():
        lines = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                lines.append(line)
        if lines:
            return lines
    return list(DEFAULT_SERVER_REQUIREMENTS)


def _installed_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def pinned_requirements(lines: list[str], *, device: str = "cpu") -> list[str]:
    """Pin each requirement to the version installed on this host when there is one
    (the host runs the test suite against exactly those), so the image gets what was
    tested. torch keeps its local label (``+cpu``) only for CPU images."""
    out: list[str] = []
    for line in lines:
        m = _NAME_RE.match(line)
        if not m:
            continue
        name = m.group(1)
        rest = line[m.end():].strip()
        extras = ""
        if rest.startswith("["):
            extras = rest[: rest.index("]") + 1]
        version = _installed_version(name)
        if version is None:
            out.append(line)
            continue
        if name.lower() == "torch" and device != "cpu":
            version = version.split("+", 1)[0]
        out.append(f"{name}{extras}=={version}")
    return sorted(set(out), key=str.lower)


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    requirements: tuple[str, ...]
    python_version: str
    platform: str

    @property
    def requirements_file(self) -> Path:
        return self.path / "requirements.txt"

    def digest(self) -> str:
        """A hash of what the wheelhouse holds (file names and sizes)."""
        h = hashlib.sha256()
        for f in sorted(self.path.iterdir()):
            if f.name.startswith("."):
                continue
            h.update(f"{f.name}\0{f.stat().st_size}\n".encode())
        return h.hexdigest()


def wheelhouse_key(requirements: list[str], python_version: str, platform: str) -> str:
    h = hashlib.sha256()
    h.update(f"{python_version}\n{platform}\n".encode())
    for line in requirements:
        h.update(line.encode() + b"\n")
    return h.hexdigest()[:16]


def _pip_platforms(platform: str) -> list[str]:
    """manylinux_2_28 wheels also need the older tags accepted (pure and 2014/2_17 wheels)."""
    plats = [platform]
    m = re.match(r"manylinux_(\d+)_(\d+)_(\w+)$", platform)
    if m:
        arch = m.group(3)
        plats += [f"manylinux_2_{minor}_{arch}" for minor in range(int(m.group(2)) - 1, 16, -1)]
        plats += [f"manylinux2014_{arch}", f"linux_{arch}"]
    return plats


def _pip_download_argv(folder: Path, python_version: str, platform: str) -> list[str]:
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--disable-pip-version-check", "--progress-bar", "off",
        "--only-binary=:all:",
        "--python-version", python_version,
        "--implementation", "cp",
        "--abi", "cp" + python_version.replace(".", ""),
        "--abi", "abi3", "--abi", "none",
    ]
    for p in _pip_platforms(platform):
        cmd += ["--platform", p]
    return cmd + ["-d", str(folder), "-r", str(folder / "requirements.txt")]


def _run_pip(cmd: list[str]) -> Iterator[Event]:
    """Run pip, yielding its output as log lines; a failure raises with pip's last line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-20:]
        yield LogLines("build", lines=(line,))
    if proc.wait() != 0:
        last = next((t for t in reversed(tail) if t.strip()), "pip download failed")
        raise EzError(
            f"could not download the image's Python wheels: {last.strip()[:300]}",
            hint="pip needs PyPI (or a mirror / --find-links in pip.conf) while packing; the target needs none",
        )


def _download(dest: Path, reqs: list[str], python_version: str, platform: str) -> Iterator[Event]:
    """Download into a temporary folder beside ``dest``, then rename it into place."""
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n", encoding="utf-8")
        yield from _run_pip(_pip_download_argv(tmp, python_version, platform))
        (tmp / ".complete").write_text("ok\n")
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_wheelhouse(
    requirements: list[str] | None = None,
    *,
    device: str = "cpu",
    python_version: str = DEFAULT_PYTHON,
    platform: str = DEFAULT_PLATFORM,
    root: Path | None = None,
) -> Iterator[Event | Wheelhouse]:
    """Yield progress events, then the :class:`Wheelhouse` (last item).

    Reuses a complete cached wheelhouse; otherwise runs ``pip download
    --only-binary=:all: --python-version X --platform P`` into a temporary folder
    and renames it into place when pip succeeds.
    """
    reqs = pinned_requirements(requirements if requirements is not None else server_requirements(), device=device)
    base = root or (locations.home() / "wheelhouse")
    dest = base / wheelhouse_key(reqs, python_version, platform)
    wheelhouse = Wheelhouse(dest, tuple(reqs), python_version, platform)
    if (dest / ".complete").is_file():
        yield wheelhouse
        return
    yield PhaseStarted("build", label=f"downloading Python wheels for the image (Python {python_version}, {platform})")
    base.mkdir(parents=True, exist_ok=True)
    yield from _download(dest, reqs, python_version, platform)
    yield PhaseFinished("build", detail=f"wheelhouse ready: {dest}")
    yield wheelhouse
