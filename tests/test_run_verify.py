"""Verify before load: parts, sidecar, structure, checksum (no Docker needed)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import EZRUNNER
from ezrunner.core.bundle.format import BundleError, parse_sidecar
from ezrunner.core.bundle.reader import find_bundle, verify_bundle
from ezrunner.core.events import BytesProgress, Notice, PhaseFinished
from support_run import make_synthetic_bundle, split_bundle, write_sidecar_for


def test_whole_bundle_verifies_with_byte_progress(synthetic_bundle):
    events = []
    source, info = verify_bundle(synthetic_bundle, events.append)
    assert not source.split and source.size == os.path.getsize(synthetic_bundle)
    assert info.served_model_name == "tiny" and info.image_id.startswith("sha256:")
    progress = [e for e in events if isinstance(e, BytesProgress)]
    assert progress and progress[-1].done == progress[-1].total == source.size
    assert isinstance(events[-1], PhaseFinished) and events[-1].data["verified"] is True


def test_split_parts_are_found_from_any_part_and_joined_in_order(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "m.tar", layer_bytes=250_000)
    whole = bundle.read_bytes()
    parts = split_bundle(bundle, 70_000)
    assert len(parts) == 4 and not bundle.exists()
    for named in (parts[0], parts[2], tmp_path / "m.tar"):
        source, info = verify_bundle(named)
        assert source.parts == tuple(parts) and source.path == tmp_path / "m.tar"
        with source.open() as fh:
            assert fh.read() == whole  # joined in order, never written to disk
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in parts] + ["m.tar.sha256"]


def test_reader_seeks_across_part_boundaries(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "s.tar", layer_bytes=50_000)
    whole = bundle.read_bytes()
    split_bundle(bundle, 1000)  # many small parts: headers straddle boundaries
    source = find_bundle(tmp_path / "s.tar.part-001")
    with source.open() as fh:
        for offset in (0, 999, 1000, 1001, 25_555, len(whole) - 3):
            fh.seek(offset)
            assert fh.read(1500) == whole[offset:offset + 1500]
    verify_bundle(source)


def test_missing_middle_part_is_named(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "m.tar")
    parts = split_bundle(bundle, 100_000)
    parts[1].unlink()
    with pytest.raises(BundleError, match=r"missing part: m\.tar\.part-002") as exc:
        verify_bundle(parts[0])
    assert exc.value.exit_code == 2


def test_missing_last_part_reads_as_truncated_before_hashing(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "m.tar")
    parts = split_bundle(bundle, 100_000)
    parts[-1].unlink()
    events = []
    with pytest.raises(BundleError, match="truncated bundle .or a missing last part") as exc:
        verify_bundle(parts[0], events.append)
    assert "part-00" in (exc.value.hint or "")
    assert not [e for e in events if isinstance(e, BytesProgress)], "detected by structure, before the long hash"


@pytest.mark.parametrize("where", ["header", "second-header", "layer-data", "between-members", "in-trailer"])
def test_truncated_file(tmp_path, where):
    bundle = make_synthetic_bundle(tmp_path / "t.tar")
    _, info = verify_bundle(bundle, check_hash=False)
    layer_name = next(n for n in info.members if n.endswith("layer.tar"))
    layer_offset, layer_size = info.members[layer_name]
    cut = {
        "header": 100,  # inside the first header: not even a tar
        "second-header": 512 + 512 + 100,
        "layer-data": layer_offset + layer_size // 2,
        "between-members": info.end_of_archive,  # every member whole, end-of-archive marker gone
        "in-trailer": info.end_of_archive + 512,
    }[where]
    bundle.write_bytes(bundle.read_bytes()[:cut])
    events = []
    with pytest.raises(BundleError) as exc:
        verify_bundle(bundle, events.append)
    assert exc.value.exit_code == 2
    expected = "not a bundle: t.tar is not a tar archive" if where == "header" else "truncated bundle: t.tar"
    assert str(exc.value).startswith(expected), str(exc.value)
    assert not [e for e in events if isinstance(e, BytesProgress)], "found before hashing"


def test_one_corrupted_byte_in_the_middle_is_a_checksum_mismatch(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "c.tar")
    data = bytearray(bundle.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x01
    bundle.write_bytes(bytes(data))  # the sidecar still has the old hash
    with pytest.raises(BundleError, match=r"^checksum mismatch: c\.tar has sha256") as exc:
        verify_bundle(bundle)
    assert exc.value.exit_code == 2


def test_no_verify_skips_the_hash_and_says_so(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "c.tar")
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
    events = []
    source, info = verify_bundle(bundle, events.append, check_hash=False)
    assert any(isinstance(e, Notice) and "--no-verify" in e.message and e.level == "warning" for e in events)
    assert not [e for e in events if isinstance(e, BytesProgress)]
    (tmp_path / "c.tar.sha256").unlink()  # not needed either
    verify_bundle(bundle, check_hash=False)


def test_not_a_bundle(tmp_path):
    text = tmp_path / "notes.tar"
    text.write_text("hello, this is not a tar\n" * 100)
    write_sidecar_for(text)
    with pytest.raises(BundleError, match=r"^not a bundle: notes\.tar is not a tar archive"):
        verify_bundle(text)
    plain = make_synthetic_bundle(tmp_path / "docker.tar", first_member="manifest.json")
    with pytest.raises(BundleError, match=r"^not a bundle: docker\.tar starts with '.*', not 'ezrunner-bundle\.json'"):
        verify_bundle(plain)
    wrong = make_synthetic_bundle(tmp_path / "fmt.tar", manifest_overrides={"format": "other/9"})
    with pytest.raises(BundleError, match="not a bundle: fmt.tar has format 'other/9'"):
        verify_bundle(wrong)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(BundleError, match="not a bundle: empty.tar is empty"):
        verify_bundle(empty, check_hash=False)


def test_image_id_is_cross_checked_against_the_config_member(tmp_path):
    bad = make_synthetic_bundle(tmp_path / "id.tar", manifest_overrides={"image_id": "sha256:" + "0" * 64})
    with pytest.raises(BundleError, match="checksum mismatch: the image config"):
        verify_bundle(bad)


def test_missing_sidecar_and_bad_sidecar(tmp_path):
    bundle = make_synthetic_bundle(tmp_path / "x.tar")
    side = tmp_path / "x.tar.sha256"
    side.write_text("nonsense\n")
    with pytest.raises(BundleError, match=r"bad checksum file: x\.tar\.sha256"):
        verify_bundle(bundle)
    side.unlink()
    with pytest.raises(BundleError, match=r"missing checksum file: x\.tar\.sha256") as exc:
        verify_bundle(bundle)
    assert "--no-verify" in exc.value.hint


def test_sidecar_parsing_accepts_sha256sum_output(tmp_path):
    make_synthetic_bundle(tmp_path / "y.tar")
    out = subprocess.run(["sha256sum", "y.tar"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert parse_sidecar(out).sha256 == (tmp_path / "y.tar.sha256").read_text().split()[0]
    assert parse_sidecar("A" * 64 + " *y.tar\n").name == "y.tar"


def test_bundle_not_found(tmp_path):
    with pytest.raises(BundleError, match="bundle not found"):
        verify_bundle(tmp_path / "nope.tar")


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    # (a checksum mismatch through the CLI needs Docker: it is checked after Docker
    # is reached; see test_run_docker.py)
    parts = split_bundle(make_synthetic_bundle(tmp_path / "p.tar"), 100_000)
    parts[1].unlink()
    proc = subprocess.run([EZRUNNER, "run", str(parts[0]), "--no-verify"], capture_output=True, text=True)
    assert proc.returncode == 2 and "ezrunner: error: missing part: p.tar.part-002" in proc.stderr


def test_manifest_json_survives_in_the_info(synthetic_bundle):
    _, info = verify_bundle(synthetic_bundle, check_hash=False)
    assert info.docker_manifest.repo_tags == ("ezrunner/tiny:test",)
    assert info.manifest.engine == "transformers"
    assert json.loads(info.manifest.to_json_bytes())["engine"] == "transformers"


def test_cancel_stops_the_hash(tmp_path, monkeypatch):
    from ezrunner.core.bundle import reader as run_bundle
    from ezrunner.core.bundle.reader import RunCancelled

    monkeypatch.setattr(run_bundle, "PROGRESS_INTERVAL", 0.0)
    bundle = make_synthetic_bundle(tmp_path / "c.tar", layer_bytes=12_000_000)  # 3 reads of 4 MiB
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(RunCancelled):
        verify_bundle(bundle, cancelled=cancelled)


def test_manifest_and_image_labels_must_agree(tmp_path):
    odd = make_synthetic_bundle(tmp_path / "odd.tar", labels={"ezrunner.served-model-name": "other",
                                                               "ezrunner.engine": "transformers"})
    with pytest.raises(BundleError, match="inconsistent bundle: ezrunner-bundle.json says served_model_name='tiny'"):
        verify_bundle(odd, check_hash=False)
