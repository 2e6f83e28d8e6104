"""Hostile bundles (issue 14, items 8, 9 and 11): every one is refused by the
structure check, before ``docker load``, with exit 2 and one line, even when its
sidecar was regenerated to match. No Docker needed."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import tarfile

import pytest
from conftest import EZRUNNER
from ezrunner.core.bundle.format import BundleError
from ezrunner.core.bundle.reader import find_bundle, inspect_bundle, verify_bundle
from support_run import make_synthetic_bundle, model_layer_tar, synthetic_labels, write_sidecar_for


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size if kind == tarfile.REGTYPE else 0, link
    return info, b"x" * info.size


OUTER = {
    "dotdot": [_member("../escape.txt", size=3)],
    "absolute": [_member("/etc/cron.d/evil", size=3)],
    "symlink": [_member("evil-link", tarfile.SYMTYPE, link="/etc/passwd")],
    "hardlink": [_member("evil-hard", tarfile.LNKTYPE, link="manifest.json")],
    "device": [_member("evil-dev", tarfile.CHRTYPE)],
    "extra-file": [_member("repositories", size=2)],
    "extra-folder": [_member("elsewhere", tarfile.DIRTYPE)],
    "duplicate": [_member("manifest.json", size=2)],
}


@pytest.mark.parametrize("case", sorted(OUTER))
def test_a_member_outside_the_docker_archive_layout_is_refused(tmp_path, case):
    bundle = make_synthetic_bundle(tmp_path / "h.tar", extra_members=OUTER[case])
    with pytest.raises(BundleError, match=r"^refused bundle: h\.tar: member") as exc:
        verify_bundle(bundle)  # the sidecar matches: only the structure check stands in the way
    assert exc.value.exit_code == 2


INNER = {
    "outside-models": [_member("etc/passwd", size=3)],
    "dotdot": [_member("models/tiny/../../etc/shadow", size=3)],
    "absolute": [_member("/models/tiny/abs", size=3)],
    "symlink": [_member("models/tiny/link", tarfile.SYMTYPE, link="/etc/shadow")],
    "hardlink": [_member("models/tiny/hard", tarfile.LNKTYPE, link="models/tiny/weights.bin")],
    "fifo": [_member("models/tiny/fifo", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(INNER))
def test_the_model_layer_holds_only_files_and_folders_under_models(tmp_path, case):
    layer = model_layer_tar(b"w" * 1000, extra=[info for info, _data in INNER[case]])
    bundle = make_synthetic_bundle(tmp_path / "m.tar", layer=layer)
    with pytest.raises(BundleError, match=r"^refused bundle: m\.tar: its model layer's member"):
        verify_bundle(bundle)


def test_a_foreign_image_without_labels_is_refused_before_loading(tmp_path):
    foreign = make_synthetic_bundle(tmp_path / "f.tar", labels={"maintainer": "someone"})
    with pytest.raises(BundleError, match=r"not an ezrunner image: the image in f\.tar lacks the label"):
        inspect_bundle(find_bundle(foreign))


@pytest.mark.parametrize("tags", [["python:3.11-slim-bookworm"], ["ezrunner/tiny:test", "busybox:latest"], []])
def test_a_bundle_may_only_tag_its_own_image(tmp_path, tags):
    probe = make_synthetic_bundle(tmp_path / "probe.tar")
    dm = json.loads(_read_member(probe, "manifest.json"))
    dm[0]["RepoTags"] = tags
    bundle = make_synthetic_bundle(tmp_path / "t.tar", docker_manifest=dm)
    with pytest.raises(BundleError, match=r"^refused bundle: t\.tar: manifest\.json tags the image"):
        verify_bundle(bundle)


def _read_member(bundle, name: str) -> bytes:
    with tarfile.open(bundle) as tf:
        return tf.extractfile(name).read()


def _docker_manifest_cases(good: list) -> dict[str, object]:
    entry = good[0]
    return {
        "config-is-a-list": [entry | {"Config": [entry["Config"]]}],
        "config-is-an-object": [entry | {"Config": {"a": 1}}],
        "layers-nested": [entry | {"Layers": [[entry["Layers"][0]]]}],
        "layers-a-string": [entry | {"Layers": entry["Layers"][0]}],
        "two-images": [entry, entry],
        "an-object": entry,
        "deep": json.loads("[" * 50 + "]" * 50),
    }


DM_CASES = ("config-is-a-list", "config-is-an-object", "layers-nested", "layers-a-string", "two-images",
            "an-object", "deep", "deeper-than-the-stack")


@pytest.mark.parametrize("case", DM_CASES)
def test_a_malformed_manifest_json_is_one_bundle_error(tmp_path, case):
    good = json.loads(_read_member(make_synthetic_bundle(tmp_path / "probe.tar"), "manifest.json"))
    dm = _docker_manifest_cases(good).get(case)
    bundle = make_synthetic_bundle(tmp_path / "d.tar", docker_manifest=dm if dm is not None else good)
    if case == "deeper-than-the-stack":
        _replace_member(bundle, "manifest.json", b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(BundleError, match=r"^not a bundle: d\.tar has an unreadable manifest\.json"):
        verify_bundle(bundle, check_hash=False)


def _replace_member(bundle, name: str, data: bytes) -> None:
    """Rewrite ``bundle`` with member ``name`` holding ``data`` (order kept), sidecar regenerated."""
    import io

    with tarfile.open(bundle) as src:
        members = [(m, src.extractfile(m).read() if m.isreg() else None) for m in src.getmembers()]
    with tarfile.open(bundle, "w", format=tarfile.PAX_FORMAT) as out:
        for m, body in members:
            body = data if m.name == name else body
            if body is not None:
                m.size = len(body)
            out.addfile(m, io.BytesIO(body) if body is not None else None)
    write_sidecar_for(bundle)


@pytest.mark.parametrize("body", [b"[" * 200_000 + b"]" * 200_000, b'{"format": "ezrunner-bundle/1", "model": [1]}',
                                  b"\xff\xfe", json.dumps({"format": "ezrunner-bundle/1", "model": "m",
                                                           "served_model_name": "tiny", "engine": "transformers",
                                                           "device": "cpu", "image_id": "x", "image_tag": "y",
                                                           "model_bytes": "lots"}).encode()])
def test_a_malformed_bundle_manifest_is_one_bundle_error(tmp_path, body):
    bundle = make_synthetic_bundle(tmp_path / "b.tar")
    _replace_member(bundle, "ezrunner-bundle.json", body)
    with pytest.raises(BundleError, match=r"^not a bundle: b\.tar"):
        verify_bundle(bundle)


@pytest.mark.parametrize("config", [b"[" * 200_000 + b"]" * 200_000, b"[1, 2]", b'{"config": []}',
                                    b'{"config": {"Labels": ["a"]}, "rootfs": {"diff_ids": ["x"]}}',
                                    b'{"config": {"Labels": {"ezrunner.port": 8000}}, "rootfs": {"diff_ids": ["x"]}}',
                                    b'{"config": {}, "rootfs": {"diff_ids": []}}'])
def test_a_malformed_image_config_is_one_bundle_error(tmp_path, config):
    probe = make_synthetic_bundle(tmp_path / "probe.tar")
    dm = json.loads(_read_member(probe, "manifest.json"))
    config_hex = hashlib.sha256(config).hexdigest()
    dm[0]["Config"] = f"{config_hex}.json"
    bundle = make_synthetic_bundle(tmp_path / "c.tar", docker_manifest=dm, manifest_overrides={"image_id": f"sha256:{config_hex}"},
                                   extra_members=[(_with_size(f"{config_hex}.json", len(config)), config)])
    with pytest.raises(BundleError) as exc:
        verify_bundle(bundle, check_hash=False)
    assert exc.value.exit_code == 2


def _with_size(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def test_cli_malformed_bundles_exit_2_with_one_line(tmp_path):
    cases = {
        "link": make_synthetic_bundle(tmp_path / "link.tar", extra_members=OUTER["symlink"]),
        "outside": make_synthetic_bundle(tmp_path / "outside.tar",
                                         layer=model_layer_tar(b"w", extra=[INNER["outside-models"][0][0]])),
        "foreign": make_synthetic_bundle(tmp_path / "foreign.tar", labels={}),
    }
    deep = make_synthetic_bundle(tmp_path / "deep.tar")
    _replace_member(deep, "manifest.json", b"[" * 200_000 + b"]" * 200_000)
    cases["deep"] = deep
    for name, bundle in cases.items():
        proc = subprocess.run([EZRUNNER, "run", str(bundle)], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ezrunner: error:")]
        assert proc.returncode == 2 and len(errors) == 1, (name, proc.stderr)
        assert "Traceback" not in proc.stderr and "Error:" not in errors[0], (name, errors)


def test_fuzzed_headers_only_ever_raise_bundle_errors(tmp_path):
    """Bounded attack: 400 bundles, each with a few random bytes changed in a tar
    header block (the outer archive's or the model layer's); inspection raises
    BundleError or passes, never anything else."""
    good = make_synthetic_bundle(tmp_path / "good.tar", layer_bytes=5000).read_bytes()
    headers = [i for i in range(0, len(good), 512) if good[i + 257:i + 262] == b"ustar"]
    rng = random.Random(14)
    target = tmp_path / "fuzz.tar"
    outcomes = {"refused": 0, "passed": 0}
    for _ in range(400):
        data = bytearray(good)
        block = rng.choice(headers)
        for _k in range(rng.randint(1, 4)):
            data[block + rng.randrange(512)] = rng.randrange(256)
        target.write_bytes(bytes(data))
        try:
            inspect_bundle(find_bundle(target))
            outcomes["passed"] += 1
        except BundleError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100, outcomes


def test_the_labels_of_a_synthetic_bundle_are_complete(tmp_path):
    _, info = verify_bundle(make_synthetic_bundle(tmp_path / "ok.tar", labels=synthetic_labels()))
    assert info.labels is not None and info.labels.served_model_name == "tiny"
