"""Benchmark: one decode step's sampling, transformers' continuous-batching stage vs the server's.

Side by side in one run, for each batch size (rows) and vocabulary size:

- **peer**: what transformers' continuous-batching step does on CPU with per-request
  temperature and top-p: its ``ContinuousBatchingTemperatureLogitsWarper`` and
  ``ContinuousBatchingTopPLogitsWarper`` (which sorts every row), then ``softmax`` and
  ``torch.multinomial`` (as ``ModelRunner._sample``);
- **ours**: ``ezrunner.images.server.sampling.sample_tokens`` (no sort, one uniform per row).

Logits are drawn so that the nucleus is as wide as the demo model's (flat, about 6000
of 8192 tokens at top_p 0.9) or as narrow as a trained model's (peaked). Prints the
median time per step and the ratio. Not collected by pytest. Usage::

    .venv/bin/python tests/benchmarks/sampler_bench.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    sys.path.insert(0, str(REPO))
    import torch
    from ezrunner.images.server.sampling import sample_tokens
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingTemperatureLogitsWarper,
        ContinuousBatchingTopPLogitsWarper,
    )
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    temperature_p = ContinuousBatchingTemperatureLogitsWarper(TemperatureLogitsWarper(0.7))
    top_p_p = ContinuousBatchingTopPLogitsWarper(TopPLogitsWarper(0.9))

    def timed(fn, n: int) -> float:
        for _ in range(3):
            fn()
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; temperature 0.7, top_p 0.9")
    print(f"{'rows':>5} {'vocab':>7} {'logits':>7} {'transformers':>13} {'ours':>9} {'speed-up':>9}")
    g = torch.Generator().manual_seed(0)
    for vocab in (8192, 32000, 128256):
        for rows in (1, 8, 32):
            for shape, scale in (("flat", 0.3), ("peaked", 6.0)):
                logits = torch.randn(rows, vocab, generator=g) * scale
                args_t = torch.full((rows,), 0.7).view(torch.int32)
                args_p = torch.full((rows,), 0.9).view(torch.int32)
                temps, top_ps = torch.full((rows,), 0.7), torch.full((rows,), 0.9)

                def peer(logits=logits, args_t=args_t, args_p=args_p):
                    scores = top_p_p(temperature_p(logits, args_t), args_p)
                    return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)

                def ours(logits=logits, temps=temps, top_ps=top_ps):
                    return sample_tokens(logits, temps, top_ps)

                n = 30 if vocab * rows > 10**6 else 100
                with torch.inference_mode():
                    a, b = timed(peer, n), timed(ours, n)
                print(f"{rows:>5} {vocab:>7} {shape:>7} {a * 1e3:>10.2f} ms {b * 1e3:>6.2f} ms {a / b:>8.1f}x",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
