"""The exact ``vllm serve`` command line for a plan.

vLLM images run vLLM's own OpenAI server, not a proxy. This turns the plan JSON
(``ezrunner.core.plan.Plan.to_dict()``) into the argv the image's CMD runs.
vLLM serves ``/health`` (the ready path) and ``/metrics`` itself.

The API key: vLLM reads env ``VLLM_API_KEY``, which is how ``run`` passes it to a
container. Pass ``api_key`` here only for a command built at run time; never
bake a key into an image (the argv is also recorded in the image labels).
"""

from __future__ import annotations

import math
from typing import Any

_DTYPE_ALIASES = {
    None: "auto",
    "auto": "auto",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}

READY_PATH = "/health"
API_KEY_ENV = "VLLM_API_KEY"


def _positive_int(plan: dict[str, Any], key: str, default: int | None) -> int | None:
    value = plan.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"plan field {key!r} must be a positive integer, got {value!r}")
    return value


def _fraction(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"plan field 'gpu_memory_utilization' must be a number, got {value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"plan field 'gpu_memory_utilization' must be in (0, 1], got {value!r}")
    return f"{round(float(value), 4):g}"


def vllm_serve_args(
    plan: dict,
    *,
    model_dir: str,
    served_model_name: str,
    host: str = "0.0.0.0",
    port: int = 8000,
    api_key: str | None = None,
) -> list[str]:
    """Return the full argv, starting with ``vllm serve MODEL_DIR``.

    Mapped plan fields: ``max_model_len`` -> ``--max-model-len``,
    ``gpu_memory_utilization`` -> ``--gpu-memory-utilization``,
    ``tensor_parallel_size`` -> ``--tensor-parallel-size`` (default 1),
    ``dtype`` -> ``--dtype`` (bf16/fp16/fp32 spellings normalised; missing -> auto),
    ``max_concurrent_sequences`` -> ``--max-num-seqs`` when present.
    Raises ``ValueError`` naming the field for a plan that is not a vLLM plan or
    holds a bad value.
    """
    if not isinstance(plan, dict):
        raise ValueError(f"plan must be a dict, got {type(plan).__name__}")
    engine = plan.get("engine")
    if engine not in (None, "vllm"):
        raise ValueError(f"plan engine is {engine!r}; vllm_serve_args needs a vLLM plan")
    if not model_dir or not isinstance(model_dir, str):
        raise ValueError("model_dir must be a non-empty string")
    if not served_model_name or not isinstance(served_model_name, str) or any(c.isspace() for c in served_model_name):
        raise ValueError(f"served_model_name must be a non-empty name without spaces, got {served_model_name!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, got {port!r}")
    dtype_raw = plan.get("dtype")
    key = dtype_raw.lower() if isinstance(dtype_raw, str) else dtype_raw
    if key not in _DTYPE_ALIASES:
        raise ValueError(f"plan field 'dtype' is {dtype_raw!r}; expected one of bfloat16, float16, float32, auto")
    dtype = _DTYPE_ALIASES[key]

    args = ["vllm", "serve", model_dir, "--served-model-name", served_model_name, "--host", str(host),
            "--port", str(port), "--dtype", dtype]
    max_len = _positive_int(plan, "max_model_len", None)
    if max_len is not None:
        args += ["--max-model-len", str(max_len)]
    util = plan.get("gpu_memory_utilization")
    if util is not None:
        args += ["--gpu-memory-utilization", _fraction(util)]
    tp = _positive_int(plan, "tensor_parallel_size", 1)
    args += ["--tensor-parallel-size", str(tp)]
    seqs = _positive_int(plan, "max_concurrent_sequences", None)
    if seqs is not None:
        args += ["--max-num-seqs", str(seqs)]
    if api_key:
        args += ["--api-key", api_key]
    return args
