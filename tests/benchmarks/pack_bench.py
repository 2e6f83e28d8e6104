"""Benchmark: ``pack`` of a 2 GiB model onto a cached engine image, against
``tar -cf`` of the same bytes (the yardstick), and against plain
``docker build`` (COPY the model) + ``docker save``, side by side in one run.

    EZRUNNER_HOME=/tmp/ezbench-home .venv/bin/python tests/benchmarks/pack_bench.py \
        --base-image ezrunner-test/debian-python:bookworm [--size-gib 2] [--rounds 2] [--workdir DIR]

Both `pack` and the tar yardstick end with an fsync of their output (pack always
does; tar is followed by `sync FILE`), so both pay for the same durability. The
goal: pack / tar <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_big_model(dest: Path, size_gib: float) -> Path:
    """The tiny demo model plus two random safetensors shards of size_gib in total."""
    from ezrunner.core.demo_model import write_demo_model

    write_demo_model(dest, preset="tiny")
    total = int(size_gib * (1 << 30))
    shard = total // 2
    for i in (1, 2):
        header = json.dumps({"filler": {"dtype": "U8", "shape": [shard], "data_offsets": [0, shard]}}).encode()
        header += b" " * ((-len(header)) % 8)
        with open(dest / f"extra-{i:05d}-of-00002.safetensors", "wb") as fh:
            fh.write(struct.pack("<Q", len(header)) + header)
            left = shard
            block = os.urandom(16 << 20)
            while left:
                n = min(left, len(block))
                fh.write(block[:n])
                left -= n
    return dest


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-image", required=True)
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--skip-docker-build", action="store_true")
    args = ap.parse_args()

    from ezrunner.core import docker_api
    from ezrunner.core.engine_image import load_engine_export
    from ezrunner.core.pack import PackOptions, pack

    def options(out: Path) -> PackOptions:
        return PackOptions(str(model), out, base_image=args.base_image, engine="transformers", device="cpu", plan={})

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ezrunner-pack-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "big-llama"
    if not model.exists():
        print(f"writing a {args.size_gib} GiB model to {model} ...", flush=True)
        write_big_model(model, args.size_gib)
    model_bytes = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())

    # warm-up: builds/exports the engine image once (not timed)
    print("warm-up pack (engine image build/export, not timed) ...", flush=True)
    warm = pack(options(work / "warm.tar"))
    engine_dir = load_engine_export(docker_api.image_or_none(docker_api.connect(), warm.engine_image).id).folder
    bundle_bytes = warm.size
    for p in (work / "warm.tar", work / "warm.tar.sha256"):
        p.unlink()

    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs", flush=True)
    pack_times, tar_times = [], []
    for r in range(args.rounds):
        out = work / "bench.tar"
        t_tar = timed(lambda: subprocess.run(
            f"tar -cf {work}/yardstick.tar -C {engine_dir} . -C {model.parent} {model.name} && sync {work}/yardstick.tar",
            shell=True, check=True))
        tar_size = (work / "yardstick.tar").stat().st_size
        (work / "yardstick.tar").unlink()
        t_pack = timed(lambda out=out: pack(options(out)))
        out.unlink()
        (work / "bench.tar.sha256").unlink()
        tar_times.append(t_tar)
        pack_times.append(t_pack)
        print(f"round {r + 1}: pack {t_pack:.2f} s   tar -cf + sync {t_tar:.2f} s   ratio {t_pack / t_tar:.2f}", flush=True)

    docker_build = docker_save = None
    if not args.skip_docker_build:
        ctx = work / "ctx"
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir()
        shutil.copytree(model, ctx / "model")
        (ctx / "Dockerfile").write_text(
            f"FROM {warm.engine_image}\n"
            'COPY ["model", "/models/big-llama"]\n'
            'CMD ["/opt/ezrunner/venv/bin/python", "-m", "ezrunner_server", "/models/big-llama", "--host", "0.0.0.0"]\n'
        )
        tag = "ezrunner-bench/plain-build:1"
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        docker_build = timed(lambda: subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True, env=env, stdout=subprocess.DEVNULL))
        docker_save = timed(lambda: subprocess.run(f"docker save -o {work}/plain.tar {tag} && sync {work}/plain.tar", shell=True, check=True))
        subprocess.run(["docker", "rmi", "-f", tag], check=False, stdout=subprocess.DEVNULL)
        (work / "plain.tar").unlink(missing_ok=True)
        shutil.rmtree(ctx, ignore_errors=True)

    p, t = min(pack_times), min(tar_times)
    print()
    print(f"model {model_bytes / 2**30:.2f} GiB, bundle {bundle_bytes / 2**30:.2f} GiB (tar of the same bytes {tar_size / 2**30:.2f} GiB)")
    print(f"pack onto the cached engine image: best {p:.2f} s, median {statistics.median(pack_times):.2f} s")
    print(f"tar -cf + sync of the same bytes:  best {t:.2f} s, median {statistics.median(tar_times):.2f} s")
    ratios = [a / b for a, b in zip(pack_times, tar_times, strict=True)]
    print(f"ratio pack / tar: best-vs-best {p / t:.2f}, median of the per-round ratios {statistics.median(ratios):.2f}  (goal <= 1.5)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs (shared machine)")
    if docker_build is not None:
        print(f"plain docker build (COPY model) {docker_build:.2f} s + docker save {docker_save:.2f} s = {docker_build + docker_save:.2f} s"
              f"  ({(docker_build + docker_save) / p:.1f}x pack)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
