"""vLLM argument mapping (vLLM itself cannot run here: the mapping is what we can check)."""

from __future__ import annotations

import pytest
from ezrunner.images.vllm_args import API_KEY_ENV, READY_PATH, vllm_serve_args

PLAN = {
    "engine": "vllm",
    "device": "cuda",
    "fits": True,
    "dtype": "bfloat16",
    "weights_bytes": 16_000_000_000,
    "kv_bytes_per_token": 131072,
    "max_model_len": 32768,
    "max_concurrent_sequences": 48,
    "tensor_parallel_size": 2,
    "gpu_memory_utilization": 0.9,
    "reasons": ["fits on 2 GPUs"],
    "warnings": [],
}


def _opts(argv: list[str]) -> dict[str, str]:
    out = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            out[a] = argv[i + 1]
    return out


def test_full_plan_maps_to_exact_argv():
    argv = vllm_serve_args(PLAN, model_dir="/models/qwen", served_model_name="qwen")
    assert argv == [
        "vllm", "serve", "/models/qwen",
        "--served-model-name", "qwen",
        "--host", "0.0.0.0", "--port", "8000",
        "--dtype", "bfloat16",
        "--max-model-len", "32768",
        "--gpu-memory-utilization", "0.9",
        "--tensor-parallel-size", "2",
        "--max-num-seqs", "48",
    ]


def test_api_key_only_when_set_and_host_port_passed():
    argv = vllm_serve_args(PLAN, model_dir="/m", served_model_name="m", host="127.0.0.1", port=9000)
    assert "--api-key" not in argv
    o = _opts(argv)
    assert o["--host"] == "127.0.0.1" and o["--port"] == "9000"
    argv = vllm_serve_args(PLAN, model_dir="/m", served_model_name="m", api_key="s3cret")
    assert _opts(argv)["--api-key"] == "s3cret"
    assert API_KEY_ENV == "VLLM_API_KEY" and READY_PATH == "/health"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("bf16", "bfloat16"), ("FP16", "float16"), ("float32", "float32"), (None, "auto"), ("auto", "auto")],
)
def test_dtype_spellings(given, expected):
    plan = dict(PLAN, dtype=given)
    assert _opts(vllm_serve_args(plan, model_dir="/m", served_model_name="m"))["--dtype"] == expected


def test_minimal_plan_defaults():
    argv = vllm_serve_args({"engine": "vllm"}, model_dir="/m", served_model_name="m")
    o = _opts(argv)
    assert o["--tensor-parallel-size"] == "1" and o["--dtype"] == "auto"
    assert "--max-model-len" not in o and "--gpu-memory-utilization" not in o and "--max-num-seqs" not in o


def test_user_values_stay_single_argv_items():
    # No shell: a hostile-looking name is one argv element, never split or interpreted.
    argv = vllm_serve_args(PLAN, model_dir="/models/a b;rm -rf", served_model_name="x$(id)")
    assert argv[2] == "/models/a b;rm -rf"
    assert _opts(argv)["--served-model-name"] == "x$(id)"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"engine": "transformers"}, "engine"),
        ({"dtype": "int3"}, "dtype"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"max_model_len": "4096"}, "max_model_len"),
        ({"tensor_parallel_size": True}, "tensor_parallel_size"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": "0.9"}, "gpu_memory_utilization"),
    ],
)
def test_bad_plans_name_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        vllm_serve_args(dict(PLAN, **change), model_dir="/m", served_model_name="m")


def test_bad_name_and_port():
    with pytest.raises(ValueError, match="served_model_name"):
        vllm_serve_args(PLAN, model_dir="/m", served_model_name="has space")
    with pytest.raises(ValueError, match="port"):
        vllm_serve_args(PLAN, model_dir="/m", served_model_name="m", port=70000)
