"""Pack without a Docker engine: validation and injection, templates, the model
layer and the split writer, bundle naming, error lines of the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import EZRUNNER
from ezrunner.core.bundle import format as B
from ezrunner.core.bundle.reader import find_bundle
from ezrunner.core.bundle.writer import SplitWriter, plan_model_layer
from ezrunner.core.docker_api import docker_error
from ezrunner.core.engine_image import dq, render_dockerfile, validate_image_ref
from ezrunner.core.engines import ENGINE_TABLE, get_spec
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.hubs import validate_repo_id, validate_revision
from ezrunner.core.pack import served_name_for
from support_pack import golden_contents

HOSTILE_IDS = [
    "org/model\nRUN rm -rf /",
    "org/model$(touch /tmp/pwned)",
    'org/mo"del',
    "org/mo'del",
    "org/model; rm -rf /",
    "org/model`id`",
    "org/model && curl x",
    "../../etc/passwd",
    "org/model\r\nLABEL x=y",
    "org//model",
    "org/model name",
    "-rf",
    "",
]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_model_ids_are_rejected(bad):
    with pytest.raises(UsageError):
        validate_repo_id(bad)


@pytest.mark.parametrize("good", ["Qwen/Qwen2.5-0.5B-Instruct", "gpt2", "sentence-transformers/all-MiniLM-L6-v2", "a.b/c_d-e.f"])
def test_hub_ids_pass(good):
    assert validate_repo_id(good) == good


@pytest.mark.parametrize("bad", ["main\nRUN x", "$(id)", "a b", "../x", "-x", "v1;ls", 'a"b'])
def test_hostile_revisions_are_rejected(bad):
    with pytest.raises(UsageError):
        validate_revision(bad)


@pytest.mark.parametrize("bad", ["python:3.11\nRUN id", "py thon", "$(id)", "x;y", "UPPER/case"])
def test_hostile_base_images_are_rejected(bad):
    with pytest.raises(UsageError):
        validate_image_ref(bad)


def test_base_image_refs_pass():
    for ref in ["python:3.11-slim-bookworm", "nvidia/cuda:12.8.1-runtime-ubuntu24.04", "vllm/vllm-openai:v0.11.0",
                "localhost:5000/a/b:c", "ezrunner-test/debian-python:bookworm", "python@sha256:" + "a" * 64]:
        assert validate_image_ref(ref) == ref


@pytest.mark.parametrize("bad", HOSTILE_IDS[:-1])
def test_cli_rejects_hostile_ids_with_one_line(bad, tmp_path):
    proc = subprocess.run([EZRUNNER, "pack", "-o", str(tmp_path / "b.tar"), "--cpu-only", "--", bad],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith("ezrunner: error: ")
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())
    assert not Path("/tmp/pwned").exists()


def test_dq_escapes_and_refuses_newlines():
    assert dq('a"b$c\\d') == '"a\\"b\\$c\\\\d"'
    with pytest.raises(UsageError):
        dq("a\nRUN id")


def test_served_name_is_docker_safe():
    assert served_name_for("Qwen/Qwen2.5-0.5B-Instruct") == "qwen2.5-0.5b-instruct"
    assert served_name_for("/x/My Model!!") == "my-model"
    assert served_name_for("...") == "model"


def error_line(stderr: str) -> str:
    """The one error line (progress lines may come before it); no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ezrunner: error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _instructions(dockerfile: str) -> list[str]:
    """Logical Dockerfile lines (continuations joined), comments dropped."""
    out, cur = [], ""
    for line in dockerfile.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    return out


@pytest.mark.parametrize("spec", ENGINE_TABLE, ids=lambda s: s.key)
def test_templates_render_every_contract_item(spec):
    text = render_dockerfile(spec, base_image="example/base:1")
    ins = _instructions(text)
    kinds = {i.split()[0] for i in ins}
    assert {"FROM", "USER", "EXPOSE", "HEALTHCHECK", "LABEL"} <= kinds
    assert "USER 10001:10001" in ins
    assert "EXPOSE 8000" in ins
    assert any(i.startswith("ENV ") and 'HF_HUB_OFFLINE="1"' in i for i in ins)
    check = next(i for i in ins if i.startswith("HEALTHCHECK"))
    assert spec.ready_path in check and f"--start-period={spec.start_period_s}s" in check
    # the health check is exec-form JSON, the same as the bundle's image config
    assert json.loads(check.split(" CMD ", 1)[1]) == spec.healthcheck()[1:]
    # labels of the contract on the engine part
    for key in (B.LABEL_ENGINE, B.LABEL_DEVICE, B.LABEL_PORT, B.LABEL_READY_PATH, B.LABEL_API_KEY_ENV):
        assert f'"{key}"=' in text
    assert f'"{B.LABEL_READY_PATH}"="{spec.ready_path}"' in text


@pytest.mark.parametrize("spec", ENGINE_TABLE, ids=lambda s: s.key)
def test_every_engine_image_drops_setuid_bits_in_its_final_stage(spec):
    ins = _instructions(render_dockerfile(spec, base_image="example/base:1"))
    final = ins[max(i for i, line in enumerate(ins) if line.startswith("FROM ")):]
    drop = next(i for i, line in enumerate(final) if "-perm /6000" in line)
    assert "chmod ug-s" in final[drop] and final[drop].startswith("RUN find / -xdev")
    assert drop < next(i for i, line in enumerate(final) if line.startswith("USER 10001"))


def test_template_values_stay_data():
    with pytest.raises(UsageError):
        render_dockerfile(get_spec("transformers", "cpu"), base_image="python:3.11-slim\nRUN id")
    assert dq('$(id) "q" `x`') == '"\\$(id) \\"q\\" `x`"'
    with pytest.raises(UsageError):
        dq("line\nRUN id")


def test_model_layer_matches_tarfile_and_hashes(tmp_path):
    model = tmp_path / "m"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (model / "sub" / ("long-name-" * 15 + ".json")).write_text("x" * 1000)
    (model / ".cache").mkdir()
    (model / ".cache" / "junk").write_text("skip me")
    layer = plan_model_layer(model, "/models/m")
    out = SplitWriter(lambda i: tmp_path / f"layer{i}.tar")
    # write only the layer body (no outer member) to check its bytes
    start = out.written
    for e in layer.entries:
        out.write(e.header)
        if e.source is not None:
            out.write(e.source.read_bytes())
            out.write(b"\0" * ((-e.size) % 512))
    out.write(b"\0" * 1024)
    out.close()
    raw = (tmp_path / "layer1.tar").read_bytes()
    assert len(raw) - start == layer.size
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer.diff_id
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        names = {m.name: m for m in tf.getmembers()}
    assert names["models/m/config.json"].mode == 0o444
    assert names["models/m"].isdir() and names["models/m"].mode == 0o555
    assert ("models/m/sub/" + "long-name-" * 15 + ".json") in names
    assert not any(".cache" in n for n in names)
    assert layer.files["model.safetensors"] == hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    assert layer.model_bytes == sum(p.stat().st_size for p in model.rglob("*") if p.is_file() and ".cache" not in p.parts)


def test_split_writer_parts_join_to_the_same_bytes(tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 123)
    w = SplitWriter(lambda i: B.part_path(tmp_path / "b.tar", i), 2 * 1024 * 1024)
    for k in range(0, len(data), 700_000):
        w.write(data[k:k + 700_000])
    w.close()
    assert w.written == len(data)
    parts = find_bundle(tmp_path / "b.tar").parts
    assert [p.name for p in parts] == ["b.tar.part-001", "b.tar.part-002", "b.tar.part-003"]
    assert b"".join(p.read_bytes() for p in parts) == data


def test_bundle_names_and_sidecar(tmp_path):
    assert B.part_path("/x/b.tar", 12).name == "b.tar.part-012"
    assert B.parse_size("3.9G") == int(3.9 * 1024**3)
    assert B.parse_size("700M") == 700 * 1024**2
    with pytest.raises(UsageError):
        B.parse_size("lots")
    line = B.format_sidecar("ab" * 32, str(tmp_path / "b.tar"))
    assert line == "ab" * 32 + "  b.tar\n"
    assert B.parse_sidecar(line) == B.Sidecar("ab" * 32, "b.tar")
    m = B.BundleManifest(model="m", served_model_name="m", engine="transformers", device="cpu",
                         image_id="sha256:" + "0" * 64, image_tag="ezrunner/m:x", ezrunner_version="1")
    assert list(m.to_dict())[0] == "format"
    assert B.BundleManifest.from_json_bytes(m.to_json_bytes()) == m


def test_docker_errors_become_one_line():
    import docker

    e = docker_error(docker.errors.DockerException("Error while fetching server API version: ('Connection aborted.', PermissionError(13, 'Permission denied'))"))
    assert "permission denied" in e.message and "docker' group" in (e.hint or "")
    e = docker_error(docker.errors.DockerException("Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"))
    assert "not running or not reachable" in e.message
    assert "\n" not in e.message


def test_cli_daemon_unreachable_is_one_line(tmp_path, tiny_model_dir):
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/nothing.sock")
    proc = subprocess.run([EZRUNNER, "pack", str(tiny_model_dir), "-o", str(tmp_path / "b.tar"), "--cpu-only"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert error_line(proc.stderr).startswith("ezrunner: error: the Docker daemon is not running or not reachable")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_plan_that_does_not_fit_needs_yes(tmp_path, tiny_model_dir):
    from ezrunner.core.pack import PackOptions, iter_pack

    gen = iter_pack(PackOptions(str(tiny_model_dir), tmp_path / "b.tar",
                                plan={"fits": False, "reasons": ["needs 80 GiB of GPU memory"], "engine": "vllm", "device": "cuda"}))
    with pytest.raises(EzError, match="does not fit") as info:
        list(gen)
    assert "--yes" in (info.value.hint or "")
    assert not list(tmp_path.iterdir())


def test_cli_plan_does_not_fit_exits_non_zero(tmp_path, tiny_model_dir, docker_engine):
    # a target with 1 MiB of RAM cannot hold even the tiny model
    proc = subprocess.run([EZRUNNER, "pack", str(tiny_model_dir), "-o", str(tmp_path / "b.tar"), "--cpu-only", "--ram", "0.001"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    line = error_line(proc.stderr)
    assert "does not fit" in line, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


def test_cli_bad_flags(tmp_path, tiny_model_dir):
    for extra, needle in ((["--split-size", "huge"], "not a size"), (["--max-model-len", "0"], "--max-model-len"),
                          (["--base-image", "Bad Image"], "--base-image")):
        proc = subprocess.run([EZRUNNER, "pack", str(tiny_model_dir), "-o", str(tmp_path / "b.tar"), "--cpu-only", *extra],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert needle in proc.stderr
    proc = subprocess.run([EZRUNNER, "pack", str(tmp_path / "missing"), "-o", str(tmp_path / "b.tar")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_cli_socket_permission_denied_is_one_line(tmp_path):
    """A real EACCES on connect: a socket with mode 000, and the CLI started without
    the capability that lets root ignore file modes (non-root: mode 000 suffices)."""
    import shutil
    import socket

    sock_path = tmp_path / "docker.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock_path))
    srv.listen(1)
    os.chmod(sock_path, 0)
    cmd = [EZRUNNER, "pack", "ezr/tiny", "-o", str(tmp_path / "b.tar"), "--cpu-only"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot be denied a socket")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, DOCKER_HOST=f"unix://{sock_path}"))
    finally:
        srv.close()
    assert proc.returncode == 1
    assert error_line(proc.stderr).startswith("ezrunner: error: permission denied on the Docker socket")
    assert "docker' group" in proc.stderr


def test_stale_temporaries_of_dead_packs_are_removed(tmp_path):
    """What `kill -9` leaves (it cannot be caught) is removed by the next pack."""
    from ezrunner.core.bundle.writer import clean_stale_temporaries

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f".b.tar.ezpack-{dead.pid}.tmp", tmp_path / f".b.tar.part-002.ezpack-{dead.pid}.tmp"]
    alive = tmp_path / f".b.tar.ezpack-{os.getppid()}.tmp"  # a running pack's file stays
    other = tmp_path / f".c.tar.ezpack-{dead.pid}.tmp"  # another bundle's file stays
    for p in [*stale, alive, other]:
        p.write_bytes(b"x")
    clean_stale_temporaries(tmp_path / "b.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_split_writer_patch_spans_parts(tmp_path):
    data = bytearray(os.urandom(3 * 1024 * 1024))
    w = SplitWriter(lambda i: B.part_path(tmp_path / "b.tar", i), 1024 * 1024)
    w.write(bytes(data))
    patch = b"P" * 40
    w.patch(1024 * 1024 - 20, patch)  # across part 1 -> 2 (both closed by now)
    w.patch(3 * 1024 * 1024 - 8, b"Q" * 8)  # inside the open last part
    w.close()
    data[1024 * 1024 - 20:1024 * 1024 + 20] = patch
    data[-8:] = b"Q" * 8
    assert b"".join(p.read_bytes() for p in find_bundle(tmp_path / "b.tar").parts) == bytes(data)


# ---- the bundle writer: the same inputs give the same bytes ------------------------------------

# sha256, size and image id of the bundle below, recorded with the writer as it was
# before the refactor to BundleWriter (issue 12): the format must not move by a byte.
GOLDEN_SHA256 = "49343dabd459e54ccdd8e3cb027190865241cb80b607480961cc0394c71fc179"
GOLDEN_SIZE = 2921984
GOLDEN_IMAGE_ID = "sha256:39aa385f0b3795a4bf0e2fe659a8d3e6b1dd8d9c3e17084a31470ffbbe9bfba4"
GOLDEN_TAG = "ezrunner/tiny:transformers-cpu-4aef23780913"


@pytest.mark.parametrize("part_size", [None, 1 << 20], ids=["one-file", "parts"])
def test_bundle_writer_bytes_are_pinned(tmp_path, monkeypatch, part_size):
    from ezrunner.core.bundle.writer import BundleWriter

    monkeypatch.setattr(B, "__version__", "9.9.9")
    out = tmp_path / "out"
    out.mkdir()
    events = []
    written = BundleWriter(golden_contents(tmp_path), out / "b.tar", part_size=part_size, check=lambda: None,
                           emit=events.append).write()
    files = sorted(p.name for p in out.iterdir())
    if part_size is None:
        assert files == ["b.tar", "b.tar.sha256"] and written.parts == []
        data = (out / "b.tar").read_bytes()
    else:
        assert files == ["b.tar.part-001", "b.tar.part-002", "b.tar.part-003", "b.tar.sha256"]
        assert written.parts == [out / n for n in files[:3]]
        data = b"".join((out / n).read_bytes() for n in files[:3])
    assert (written.sha256, written.size) == (GOLDEN_SHA256, GOLDEN_SIZE)
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256
    assert (written.manifest.image_id, written.manifest.image_tag) == (GOLDEN_IMAGE_ID, GOLDEN_TAG)
    assert B.BundleManifest.from_json_bytes(data[512:512 + len(written.manifest.to_json_bytes())]) == written.manifest
    assert events[0].phase == "export" and events[0].label == "writing b.tar"


def test_bundle_writer_failure_leaves_nothing(tmp_path):
    """A cancel (``check`` raising) midway removes every temporary; nothing final appears."""
    from ezrunner.core.bundle.writer import BundleWriter

    out = tmp_path / "out"
    out.mkdir()
    calls = [0]

    def check():
        calls[0] += 1
        if calls[0] > 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BundleWriter(golden_contents(tmp_path), out / "b.tar", part_size=None, check=check, emit=lambda e: None).write()
    assert list(out.iterdir()) == []
