"""Benchmark: `ezrunner run`'s verify step (streamed sha256 of a bundle, whole
and split into parts) against `sha256sum` on the same file, and against a plain
read of the file (the disk/page-cache limit), side by side in one run.

    .venv/bin/python tests/benchmarks/run_verify_bench.py [SIZE_MIB]

Not collected by pytest. Prints one line per measurement and the ratios.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ezrunner.core.bundle.reader import find_bundle, sha256_of, verify_bundle  # noqa: E402
from support_run import make_synthetic_bundle, split_bundle  # noqa: E402


def build(folder: Path, size_mib: int) -> Path:
    """A contract-conforming bundle with one big random member (about SIZE_MIB)."""
    small = make_synthetic_bundle(folder / "small.tar", layer_bytes=10_000)
    big = folder / "big.bin"
    with open(big, "wb") as fh:
        block = os.urandom(1 << 20)
        for i in range(size_mib):
            fh.write(block[i % 7:] + block[: i % 7])
    out = folder / "bench.tar"
    with tarfile.open(small) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        members = src.getmembers()
        dst.addfile(members[0], src.extractfile(members[0]))
        dst.add(big, arcname="padding/blob.bin")
        for m in members[1:]:
            dst.addfile(m, src.extractfile(m))
    big.unlink()
    small.unlink()
    digest = sha256_of(find_bundle(out))
    (folder / "bench.tar.sha256").write_text(f"{digest}  bench.tar\n")
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def plain_read(path: Path) -> None:
    buf = bytearray(4 << 20)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


def main() -> None:
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    with tempfile.TemporaryDirectory(dir=os.environ.get("EZ_BENCH_DIR")) as d:
        folder = Path(d)
        bundle = build(folder, size_mib)
        size = bundle.stat().st_size
        plain_read(bundle)  # warm the page cache for everyone alike
        rows = []
        for _ in range(2):
            rows.append(("read only (limit)", timed(lambda: plain_read(bundle))))
            rows.append(("sha256sum (peer)", timed(lambda: subprocess.run(["sha256sum", str(bundle)], check=True, capture_output=True))))
            rows.append(("ezrunner verify", timed(lambda: verify_bundle(bundle))))
        parts = split_bundle(bundle, 64 << 20)
        for _ in range(2):
            rows.append((f"ezrunner verify, {len(parts)} parts", timed(lambda: verify_bundle(parts[0]))))
        best: dict[str, float] = {}
        for name, secs in rows:
            best[name] = min(secs, best.get(name, secs))
        mib = size / (1 << 20)
        print(f"bundle: {mib:.0f} MiB (page cache warm), best of 2")
        for name, secs in best.items():
            print(f"  {name:32s} {secs:7.3f} s  {mib / secs:8.0f} MiB/s")
        peer = best["sha256sum (peer)"]
        print(f"ratio ezrunner verify / sha256sum: {best['ezrunner verify'] / peer:.2f}x time")
        split_key = next(k for k in best if k.endswith("parts"))
        print(f"ratio split verify / sha256sum:    {best[split_key] / peer:.2f}x time")
        print(f"ratio ezrunner verify / plain read: {best['ezrunner verify'] / best['read only (limit)']:.2f}x time")


if __name__ == "__main__":
    main()
