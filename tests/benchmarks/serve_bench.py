"""Benchmark: the embedded server vs ``transformers serve --continuous-batching`` vs raw generate().

One run, same machine, same model (the demo preset "small": 512 wide, 8 layers,
~34 M parameters, BF16 weights), same sampling (the model's generation config:
temperature 0.7, top_p 0.9), same prompts:

1. this server (``python -m ezrunner.images.server``, defaults: dtype auto, which on a CPU with
   native bf16 (AVX512-BF16/AMX) keeps the BF16 weights and elsewhere computes in float32)
2. the peer: ``transformers serve MODEL --continuous-batching --device cpu`` (its dtype auto: the
   weights' BF16). The peer needs ``accelerate`` (part of ``transformers[serving]``); pass
   ``--peer-pythonpath DIR`` if it is installed outside the venv.
3. the limit: raw ``model.generate()`` in this process at batch 1 and batch 8, in the dtype this
   server resolved (reported by its /v1/models), plus batch 1 in the other dtype for reference.

For concurrency 1, 8 and 32 it prints aggregate completion tokens/s and the median
time to first token (first chunk with content), then the ratios vs the peer and vs
the limit. Not collected by pytest. Usage::

    .venv/bin/python tests/benchmarks/serve_bench.py [--tokens 64] [--peer-pythonpath DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
CONCURRENCY = (1, 8, 32)
PROMPTS = [
    "Explain how the operator loads the bundle on the air-gapped server.",
    "Write a short note about checksums and split tar files.",
    "What does the wizard show on an 80x24 terminal?",
    "Describe continuous batching in two sentences.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout} s")


async def one_stream(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int,
                     extra: dict) -> tuple[float | None, int, float]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, **extra}
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        buf = ""
        async for text in r.aiter_text():  # split on "\n" only: JSON may carry U+2028 and friends
            buf += text
            *lines, buf = buf.split("\n")
            for line in lines:
                if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                for ch in ev.get("choices") or []:
                    if ttft is None and (ch.get("delta") or {}).get("content"):
                        ttft = time.perf_counter() - t0
                if ev.get("usage"):
                    tokens = ev["usage"]["completion_tokens"]
    return ttft, tokens, time.perf_counter() - t0


async def load_round(base: str, model: str, concurrency: int, max_tokens: int, extra: dict) -> dict:
    url = f"{base}/v1/chat/completions"
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(
            one_stream(client, url, model, PROMPTS[i % len(PROMPTS)] + f" ({i})", max_tokens, extra)
            for i in range(concurrency)))
        wall = time.perf_counter() - t0
    tokens = sum(r[1] for r in results)
    ttfts = [r[0] for r in results if r[0] is not None]
    return {"tokens": tokens, "wall": wall, "tok_s": tokens / wall,
            "ttft_median": statistics.median(ttfts) if ttfts else float("nan")}


def run_round(base: str, model: str, c: int, max_tokens: int) -> dict:
    return asyncio.run(load_round(base, model, c, max_tokens, {}))


class RawLimit:
    """raw model.generate() in this process (same dtype and sampling as the server), the physical limit."""

    def __init__(self, model_dir: Path, max_tokens: int, dtype) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.tok.padding_side = "left"
        self.model_dir = model_dir
        self.dtype = dtype
        self.models = {dtype: AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()}
        self.texts = [self.tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                   tokenize=False) for p in PROMPTS]
        self.max_tokens = max_tokens
        self.cfg = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=max_tokens,
                                    min_new_tokens=max_tokens, pad_token_id=self.tok.pad_token_id, eos_token_id=None)

    def tok_s(self, batch: int, dtype=None) -> float:
        torch = self.torch
        dtype = dtype or self.dtype
        if dtype not in self.models:
            from transformers import AutoModelForCausalLM

            self.models[dtype] = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=dtype).eval()
        model = self.models[dtype]
        enc = self.tok([self.texts[i % len(self.texts)] for i in range(batch)], return_tensors="pt", padding=True,
                       add_special_tokens=False)
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(**enc, generation_config=self.cfg)
            return batch * self.max_tokens / (time.perf_counter() - t0)


def summarize(rounds: list[dict]) -> dict:
    best = max(rounds, key=lambda r: r["tok_s"])
    return {"tok_s": best["tok_s"], "ttft_median": statistics.median(r["ttft_median"] for r in rounds),
            "tok_s_all": [round(r["tok_s"], 1) for r in rounds]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64, help="completion tokens per request (default 64)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds per point; best throughput is kept")
    ap.add_argument("--peer-pythonpath", help="extra PYTHONPATH for the peer (where accelerate is installed)")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--model-dir", help="use this model folder instead of writing the small demo model")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from ezrunner.core.demo_model import write_demo_model

        model_dir = write_demo_model(work / "small", preset="small")
    print(f"model: {model_dir} | torch threads: {os.cpu_count()} cores visible | tokens/request: {args.tokens}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs: list[subprocess.Popen] = []
    servers: dict[str, tuple[str, str]] = {}
    try:
        # 1. this server (defaults: dtype auto)
        port = free_port()
        log = open(work / "ours.log", "wb")  # noqa: SIM115
        ours = subprocess.Popen([sys.executable, "-m", "ezrunner.images.server", str(model_dir), "--port", str(port),
                                 "--served-model-name", "small", "--max-concurrency", "32"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        procs.append(ours)
        servers["ours"] = (f"http://127.0.0.1:{port}", "small")
        # 2. the peer
        if not args.skip_peer:
            port = free_port()
            peer_env = dict(env)
            if args.peer_pythonpath:
                peer_env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.peer_pythonpath,
                                                                       env.get("PYTHONPATH")]))
            log = open(work / "peer.log", "wb")  # noqa: SIM115
            cli = Path(sys.executable).parent / "transformers"
            peer = subprocess.Popen([str(cli), "serve", str(model_dir), "--continuous-batching", "--device", "cpu",
                                     "--host", "127.0.0.1", "--port", str(port)],
                                    stdout=log, stderr=subprocess.STDOUT, env=peer_env, cwd=work)
            procs.append(peer)
            servers["peer"] = (f"http://127.0.0.1:{port}", str(model_dir))
            wait_ready(f"http://127.0.0.1:{port}/health", peer)
        wait_ready(f"{servers['ours'][0]}/ready", ours)
        for base, model in servers.values():  # warm-up: lazy initialisation, first batches
            run_round(base, model, 8, 8)
        # 3. the limit, in this process, in the dtype this server chose
        card = httpx.get(f"{servers['ours'][0]}/v1/models", timeout=10).json()["data"][0]
        print(f"this server runs on {card['device']} in {card['dtype']}", flush=True)
        import torch

        dtype = getattr(torch, card["dtype"])
        other = torch.float32 if dtype != torch.float32 else torch.bfloat16
        raw = RawLimit(model_dir, args.tokens, dtype)
        raw.tok_s(1)

        # Interleaved rounds (ours, peer, raw) so that load from other processes hits all alike;
        # throughput keeps each one's best round, TTFT the median of the rounds' medians.
        rounds: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in CONCURRENCY} for name in servers}
        raw_rounds: dict[int, list[float]] = {1: [], 8: []}
        for c in CONCURRENCY:
            for rep in range(args.repeats):
                for name, (base, model) in servers.items():
                    r = run_round(base, model, c, args.tokens)
                    rounds[name][c].append(r)
                    print(f"  {name:<5} c={c:<3} round {rep + 1}: {r['tok_s']:7.1f} tok/s, TTFT median "
                          f"{r['ttft_median'] * 1000:6.0f} ms ({r['tokens']} tokens, {r['wall']:.1f} s)", flush=True)
                if c in raw_rounds:
                    v = raw.tok_s(c)
                    raw_rounds[c].append(v)
                    print(f"  raw   b={c:<3} round {rep + 1}: {v:7.1f} tok/s", flush=True)
        other_b1 = max(raw.tok_s(1, other) for _ in range(args.repeats))
        other_b8 = max(raw.tok_s(8, other) for _ in range(args.repeats))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=30)

    results = {name: {c: summarize(rs) for c, rs in per.items()} for name, per in rounds.items()}
    raw = {b: max(v) for b, v in raw_rounds.items()}
    for name, per in results.items():
        for c, r in per.items():
            print(f"  {name} c={c}: rounds {r['tok_s_all']} tok/s")
    ours_r = results["ours"]
    print("\nsummary")
    print(f"{'conc':>5} {'ours tok/s':>11} {'peer tok/s':>11} {'ours/peer':>10} {'ours TTFT':>10} {'peer TTFT':>10}")
    for c in CONCURRENCY:
        o = ours_r[c]
        p = results.get("peer", {}).get(c)
        ratio = f"{o['tok_s'] / p['tok_s']:.2f}x" if p else "-"
        pt = f"{p['ttft_median'] * 1000:.0f} ms" if p else "-"
        print(f"{c:>5} {o['tok_s']:>11.1f} {p['tok_s'] if p else float('nan'):>11.1f} {ratio:>10} "
              f"{o['ttft_median'] * 1000:>7.0f} ms {pt:>10}")
    print(f"raw generate in {card['dtype']}: batch 1 {raw[1]:.1f} tok/s, batch 8 {raw[8]:.1f} tok/s; "
          f"in {str(other).removeprefix('torch.')}: batch 1 {other_b1:.1f}, batch 8 {other_b8:.1f} tok/s")
    print(f"ours c=1 / raw b=1: {ours_r[1]['tok_s'] / raw[1]:.2f}x   (goal >= 0.95x)")
    print(f"ours c=8 / raw b=8: {ours_r[8]['tok_s'] / raw[8]:.2f}x")
    if "peer" in results:
        for c in (8, 32):
            print(f"ours/peer at c={c}: {ours_r[c]['tok_s'] / results['peer'][c]['tok_s']:.2f}x   (goal >= 1.1x)")
        print(f"TTFT at c=8: ours {ours_r[8]['ttft_median'] * 1000:.0f} ms vs peer "
              f"{results['peer'][8]['ttft_median'] * 1000:.0f} ms   (goal: no worse)")
    print(f"logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
