"""Shared pack fixtures (registered in conftest.py ``pytest_plugins``).

``packed_bundle`` (session): the tiny demo model packed ONCE per session with
``ezrunner.core.pack`` onto the locally built test base image (Transformers on
CPU). The engine image (wheelhouse with torch CPU, transformers, fastapi, ...) is
the expensive part of the whole suite; it is cached in the Docker engine under a
tag derived from the hash of its Dockerfile, base image and wheelhouse, so later
sessions reuse it too. Run-side and TUI tests reuse this bundle; do not modify it
(copy it if a test must damage it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ezrunner.core.bundle.format import BundleManifest
    from ezrunner.core.pack import PackResult


@dataclass(frozen=True)
class PackedBundle:
    path: Path  # BUNDLE.tar
    sidecar: Path  # BUNDLE.tar.sha256
    manifest: BundleManifest  # the ezrunner-bundle.json content
    image_tag: str  # ezrunner/<name>:<tag> (what `docker load` creates)
    image_id: str  # sha256:<hex of the config blob>
    engine_image: str  # the cached engine image tag
    sha256: str
    result: PackResult


def pack_home(tmp_path_factory) -> Path:
    """The same isolated ezrunner home as conftest's autouse fixture."""
    return tmp_path_factory.getbasetemp() / "ezrunner-home"


@pytest.fixture(scope="session")
def packed_bundle(tmp_path_factory, base_image, tiny_model_dir) -> PackedBundle:
    from ezrunner.core.pack import PackOptions, pack

    out = tmp_path_factory.mktemp("packed") / "tiny-llama.tar"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EZRUNNER_HOME", str(pack_home(tmp_path_factory)))
        result = pack(PackOptions(str(tiny_model_dir), out, base_image=base_image, engine="transformers", device="cpu"))
    return PackedBundle(
        path=Path(result.bundle),
        sidecar=Path(result.sidecar),
        manifest=result.manifest,
        image_tag=result.image_tag,
        image_id=result.image_id,
        engine_image=result.engine_image,
        sha256=result.sha256,
        result=result,
    )


def read_bundle_manifest(path: Path):
    """The ``ezrunner-bundle.json`` of a bundle (or its first part), through the reader."""
    from ezrunner.core.bundle.reader import find_bundle, inspect_bundle

    return inspect_bundle(find_bundle(path)).manifest


def read_sidecar(path: Path) -> tuple[str, str]:
    """(sha256 hex, file name) of a ``.sha256`` sidecar."""
    from ezrunner.core.bundle.format import parse_sidecar

    sc = parse_sidecar(Path(path).read_text(encoding="utf-8"))
    return sc.sha256, sc.name


def golden_contents(root: Path):
    """Fixed inputs of a small bundle (a model folder, two engine layers): the same bytes every time."""
    import os

    from ezrunner.core.bundle import format as B
    from ezrunner.core.bundle.writer import BundleContents
    from ezrunner.core.engines import ServeRequest, get_spec

    m = root / "org-tiny"
    (m / "sub").mkdir(parents=True)
    (m / "config.json").write_text('{"model_type": "llama"}')
    (m / "model.safetensors").write_bytes(bytes(range(256)) * 6000 + b"tail")
    (m / "sub" / "tokenizer.json").write_text("{}" * 300)
    for p in m.rglob("*"):
        os.utime(p, (1_700_000_000, 1_700_000_000))
    (root / "engine").mkdir()
    l1, l2 = root / "engine" / "l1.tar", root / "engine" / "l2.tar"
    l1.write_bytes(b"a" * 70_000 + b"b" * 123)
    l2.write_bytes(b"c" * 1_300_000)
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"], "Labels": {"x": "y"}},
              "rootfs": {"type": "layers", "diff_ids": [d1, d2, d1]}, "history": [{"created_by": "x"}], "id": "drop"}
    layers = [(l1, l1.stat().st_size, d1), (l2, l2.stat().st_size, d2), (l1, l1.stat().st_size, d1)]
    spec = get_spec("transformers", "cpu")
    plan = {"engine": "transformers", "device": "cpu", "fits": True}
    manifest = B.BundleManifest(model="org/tiny", revision="abc", served_model_name="tiny", engine="transformers",
                                device="cpu", plan=plan, image_id="", image_tag="", ezrunner_version="9.9.9",
                                created="2024-01-02T03:04:05Z")
    return BundleContents(m, manifest, spec, spec.serve_argv(ServeRequest("tiny", plan)), config, layers,
                          mtime=1_700_000_000)
