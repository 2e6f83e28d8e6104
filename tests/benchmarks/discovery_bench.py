"""Discovery/plan benchmark: (1) how fast an offline search gives up, against the
hub client's own behaviour; (2) sizing a local model from safetensors headers,
against the safetensors library reading the same headers and against loading
the tensors.

    .venv/bin/python tests/benchmarks/discovery_bench.py [--skip-peer-search]

Not collected by pytest. Prints a ratio for each pair.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

UNREACHABLE = "http://no-such-host.invalid"


def best(fn, n=5):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def offline_search(skip_peer: bool) -> None:
    from ezrunner.core import discovery

    t0 = time.perf_counter()
    out = discovery.search("qwen", ["hf"], 5, hf_endpoint_url=UNREACHABLE)
    ez = time.perf_counter() - t0
    print("offline search, Hugging Face endpoint unresolvable")
    print(f"  ezrunner discovery.search            {ez:8.3f} s   ({out.errors['hf']})")
    if skip_peer:
        return
    import logging

    from huggingface_hub import HfApi

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # no retry lines in the output

    t0 = time.perf_counter()
    try:
        list(HfApi(endpoint=UNREACHABLE).list_models(search="qwen", limit=5))
    except Exception as exc:  # noqa: BLE001
        err = type(exc).__name__
    peer = time.perf_counter() - t0
    print(f"  HfApi.list_models (peer)              {peer:8.3f} s   ({err} after its retries)")
    print(f"ratio ezrunner / peer: {ez / peer:.4f}x time")


def header_sizing() -> None:
    from safetensors import safe_open

    try:
        from safetensors.torch import load_file  # bf16 needs torch ([serve] extra)
    except ImportError:
        load_file = None

    from ezrunner.core import discovery, modelinfo
    from ezrunner.core.demo_model import write_demo_model

    with tempfile.TemporaryDirectory() as tmp:
        model = write_demo_model(Path(tmp) / "small", preset="small")
        st = model / "model.safetensors"
        size = st.stat().st_size

        def ours():
            return modelinfo.summarize_safetensors([st]).parameters

        def peer_headers():
            n = 0
            with safe_open(str(st), framework="numpy") as f:
                for k in f.keys():
                    shape = f.get_slice(k).get_shape()
                    c = 1
                    for d in shape:
                        c *= d
                    n += c
            return n

        def peer_load():
            return sum(t.numel() for t in load_file(str(st)).values())

        def details():
            return discovery.local_details(model).parameters

        assert ours() == peer_headers() == details()
        if load_file is not None:
            assert peer_load() == ours()  # also warms the page cache
        print(f"\nsizing the 'small' demo model ({size / 2**20:.1f} MiB, {ours():,} parameters), best/median of 5")
        rows = [
            ("ezrunner summarize_safetensors", best(ours)),
            ("safetensors safe_open headers (peer)", best(peer_headers)),
            ("ezrunner local_details (all)", best(details)),
        ]
        if load_file is not None:
            rows.insert(2, ("safetensors.torch load_file (mmap)", best(peer_load)))
        for name, (b, m) in rows:
            print(f"  {name:38} {b * 1e3:9.3f} ms  {m * 1e3:9.3f} ms")
        print(f"ratio headers ours / safe_open: {rows[0][1][0] / rows[1][1][0]:.2f}x time")
        if load_file is not None:
            print(f"ratio headers ours / load_file: {rows[0][1][0] / rows[2][1][0]:.4f}x time")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-peer-search", action="store_true", help="skip the ~24 s hub-client peer")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    offline_search(a.skip_peer_search)
    header_sizing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
