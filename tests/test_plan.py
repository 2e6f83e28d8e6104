"""The memory/engine plan: exact parameter counts and KV bytes per token from
published configs (tests/fixtures/configs), engine/dtype/warning decisions on
T4, A10, A100-80G x1/x2 and a CPU-only 64 GiB machine, and the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import EZRUNNER
from ezrunner.core import hardware, kvcache, modelinfo, paramcount
from ezrunner.core.discovery import ModelDetails
from ezrunner.core.errors import UsageError
from ezrunner.core.hubs.local import fill_parameters_from_config as _fill_parameters_from_config
from ezrunner.core.modelinfo import WeightFile
from ezrunner.core.plan import WARNING_CODES, make_plan

CONFIGS = Path(__file__).parent / "fixtures" / "configs"


def cfg(name: str) -> modelinfo.ModelConfig:
    return modelinfo.parse_config(json.loads((CONFIGS / f"{name}.json").read_text()), where=name)


def details(name: str, fmt: str = "safetensors") -> ModelDetails:
    """A model known only by its config.json (weights counted from the config)."""
    fname = {"safetensors": "model.safetensors", "pytorch": "pytorch_model.bin", "gguf": "model.gguf"}[fmt]
    d = ModelDetails(model=name, source="local", config=cfg(name), files=[WeightFile(fname, None, fmt)])
    _fill_parameters_from_config(d)
    return d


# Published totals (the Hub's safetensors parameter counts).
PUBLISHED = {
    "llama-3.1-8b": 8_030_261_248,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-0.5b": 494_032_768,
    "mistral-7b-v0.1": 7_241_732_096,
    "mixtral-8x7b-v0.1": 46_702_792_704,
}
# From the same formula; they agree with the published rounded figures
# (Gemma-2-9B "9.24B", Phi-3-mini "3.82B", DeepSeek-V2-Lite "15.7B").
DERIVED = {
    "gemma-2-9b": 9_241_705_984,
    "phi-3-mini-4k-instruct": 3_821_079_552,
    "deepseek-v2-lite": 15_706_484_224,
}


def estimate(c: modelinfo.ModelConfig) -> int:
    return sum(modelinfo.count_parts(c).values())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_exact_parameter_counts_match_published_totals(name):
    counted = paramcount.config_count(cfg(name))
    assert counted.total == estimate(cfg(name)) == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_parameter_counts_of_other_families(name):
    assert paramcount.config_count(cfg(name)).total == estimate(cfg(name)) == DERIVED[name]


def test_count_changes_with_biases_and_tying():
    base = json.loads((CONFIGS / "llama-3.1-8b.json").read_text())
    n0 = estimate(modelinfo.parse_config(base))
    tied = estimate(modelinfo.parse_config({**base, "tie_word_embeddings": True}))
    assert n0 - tied == 128256 * 4096
    biased = estimate(modelinfo.parse_config({**base, "attention_bias": True}))
    assert biased - n0 == 32 * (4096 + 1024 + 1024 + 4096)


# KV bytes per token of the layers whose cache grows with the context (vLLM's KV cache specs,
# core/kvcache.py); sliding-window layers are bounded per sequence instead.
KV = {
    "llama-3.1-8b": 131072,  # 2 x 32 x 8 x 128 x 2
    "qwen2.5-7b": 57344,  # 2 x 28 x 4 x 128 x 2 (use_sliding_window: false)
    "qwen2.5-0.5b": 12288,  # 2 x 24 x 2 x 64 x 2
    "mistral-7b-v0.1": 0,  # every layer slides over 4096 tokens
    "mixtral-8x7b-v0.1": 131072,  # sliding_window: null
    "gemma-2-9b": 172032,  # 2 x 21 global layers x 8 x 256 x 2; the other 21 slide
    "phi-3-mini-4k-instruct": 0,  # sliding_window 2047 on every layer
    "deepseek-v2-lite": 31104,  # MLA: 27 x (512 + 64) x 2
}


@pytest.mark.parametrize("name", sorted(KV))
def test_kv_bytes_per_token(name):
    assert kvcache.kv_layout(cfg(name), 2).per_token == KV[name]


def test_notes_for_mla_and_sliding_window():
    def notes(name):
        c = cfg(name)
        return kvcache.kv_notes(c, kvcache.kv_layout(c, 2))

    assert any("MLA" in n and "kv_lora_rank 512" in n for n in notes("deepseek-v2-lite"))
    assert any("sliding attention" in n for n in notes("gemma-2-9b"))
    assert any("sliding attention" in n for n in notes("mistral-7b-v0.1"))
    assert notes("qwen2.5-7b") == [] and notes("llama-3.1-8b") == []


def test_config_features():
    assert cfg("mixtral-8x7b-v0.1").num_experts == 8
    assert cfg("deepseek-v2-lite").num_experts == 64
    assert cfg("phi-3-mini-4k-instruct").trust_remote_code
    assert not cfg("llama-3.1-8b").trust_remote_code
    assert cfg("gemma-2-9b").dtype == "float32"


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "num_attention_heads"])
def test_missing_required_key_is_named(key):
    data = json.loads((CONFIGS / "llama-3.1-8b.json").read_text())
    del data[key]
    with pytest.raises(UsageError) as e:
        modelinfo.parse_config(data, where="x/config.json")
    assert repr(key) in e.value.message and "x/config.json" in e.value.message


def test_integer_valued_floats_are_integers_and_still_checked():
    data = json.loads((CONFIGS / "llama-3.1-8b.json").read_text())
    assert modelinfo.parse_config({**data, "hidden_size": 4096.0}).hidden_size == 4096
    with pytest.raises(UsageError, match="'num_attention_heads' must be positive, got 0"):
        modelinfo.parse_config({**data, "num_attention_heads": 0.0})


# ------------------------------------------------------------------ targets

T4 = hardware.preset_profile("T4", 1, ram_gib=64)
A10 = hardware.preset_profile("A10", 1, ram_gib=64)
A100 = hardware.preset_profile("A100-80G", 1, ram_gib=64)
A100x2 = hardware.preset_profile("A100-80G", 2, ram_gib=64)
CPU64 = hardware.manual_profile(ram_gib=64)

# (model, target) -> (engine, device, dtype, tp, max_model_len or None for "capped", warning codes)
DECISIONS = [
    ("llama-3.1-8b", T4, ("transformers", "cpu", "bfloat16", 1, 131072), {"WEIGHTS_EXCEED_GPU_MEMORY", "CPU_FALLBACK"}),
    ("llama-3.1-8b", A10, ("vllm", "cuda", "bfloat16", 1, None), {"KV_CACHE_LIMITS_CONTEXT"}),
    ("llama-3.1-8b", A100, ("vllm", "cuda", "bfloat16", 1, 131072), set()),
    ("llama-3.1-8b", A100x2, ("vllm", "cuda", "bfloat16", 1, 131072), set()),
    ("llama-3.1-8b", CPU64, ("transformers", "cpu", "bfloat16", 1, 131072), {"CPU_FALLBACK"}),
    ("qwen2.5-0.5b", T4, ("vllm", "cuda", "float16", 1, 32768), {"BF16_UNSUPPORTED"}),
    ("qwen2.5-0.5b", A10, ("vllm", "cuda", "bfloat16", 1, 32768), set()),
    ("qwen2.5-0.5b", CPU64, ("transformers", "cpu", "float32", 1, 32768), set()),
    ("mixtral-8x7b-v0.1", T4, (None, None, "bfloat16", 1, 32768), {"WEIGHTS_EXCEED_GPU_MEMORY", "RAM_INSUFFICIENT", "DOES_NOT_FIT"}),
    ("mixtral-8x7b-v0.1", A100, (None, None, "bfloat16", 1, 32768), {"WEIGHTS_EXCEED_GPU_MEMORY", "RAM_INSUFFICIENT", "DOES_NOT_FIT"}),
    ("mixtral-8x7b-v0.1", A100x2, ("vllm", "cuda", "bfloat16", 2, 32768), set()),
    ("mixtral-8x7b-v0.1", CPU64, (None, None, "bfloat16", 1, 32768), {"RAM_INSUFFICIENT", "DOES_NOT_FIT"}),
    ("gemma-2-9b", A10, ("vllm", "cuda", "bfloat16", 1, None), {"KV_CACHE_LIMITS_CONTEXT"}),
    ("gemma-2-9b", T4, ("transformers", "cpu", "float32", 1, 8192), {"WEIGHTS_EXCEED_GPU_MEMORY", "CPU_FALLBACK"}),
    ("phi-3-mini-4k-instruct", T4, ("vllm", "cuda", "float16", 1, 4096), {"REMOTE_CODE_REQUIRED", "BF16_UNSUPPORTED"}),
    ("qwen2.5-7b", A100x2, ("vllm", "cuda", "bfloat16", 1, 131072), set()),
]


@pytest.mark.parametrize(("name", "target", "expect", "codes"), DECISIONS,
                         ids=[f"{d[0]}@{d[1].summary().split(',')[0]}" for d in DECISIONS])
def test_engine_and_warning_decisions(name, target, expect, codes):
    p = make_plan(details(name), target)
    engine, device, dtype, tp, length = expect
    assert (p.engine, p.device, p.dtype, p.tensor_parallel_size) == (engine, device, dtype, tp), p.reasons
    assert set(p.warning_codes) == codes, [w.message for w in p.warnings]
    assert p.fits == (engine is not None)
    if length is None:
        assert p.max_model_len < p.model_max_model_len and p.max_model_len % 256 == 0
    else:
        assert p.max_model_len == length
    if p.fits:
        assert p.max_concurrent_sequences >= 1 and p.reasons
    assert all(w.code in WARNING_CODES and w.message for w in p.warnings)


def test_a10_capped_context_is_what_the_kv_cache_holds():
    p = make_plan(details("llama-3.1-8b"), A10)
    assert p.kv_bytes_per_token == 131072
    assert p.max_model_len * p.kv_bytes_per_token <= p.kv_cache_bytes
    assert (p.max_model_len + 256) * p.kv_bytes_per_token > p.kv_cache_bytes
    # budget arithmetic: memory x util - weights - reserve == KV room
    assert p.kv_cache_bytes == int(A10.gpus[0].memory_total * 0.9 - p.weights_bytes - p.reserve_bytes)


def test_tensor_parallel_when_one_gpu_is_not_enough():
    two_a10 = hardware.preset_profile("A10", 2, ram_gib=64)
    p = make_plan(details("llama-3.1-8b"), two_a10)
    assert (p.engine, p.tensor_parallel_size, p.max_model_len) == ("vllm", 2, 131072)
    assert any("tensor parallel 2" in r for r in p.reasons)


def test_tensor_parallel_is_a_power_of_two_dividing_the_heads():
    eight = hardware.preset_profile("T4", 8, ram_gib=64)
    p = make_plan(details("mixtral-8x7b-v0.1"), eight)
    assert (p.engine, p.tensor_parallel_size, p.dtype) == ("vllm", 8, "float16")
    six = hardware.preset_profile("T4", 6, ram_gib=64)  # 6 is no power of two: at most TP 4, too small
    p6 = make_plan(details("mixtral-8x7b-v0.1"), six)
    assert not p6.fits and "DOES_NOT_FIT" in p6.warning_codes


def test_explicit_bf16_on_t4_falls_back_to_fp16_with_warning():
    p = make_plan(details("qwen2.5-0.5b"), T4, dtype="bfloat16")
    assert p.dtype == "float16" and "BF16_UNSUPPORTED" in p.warning_codes


def test_requested_context_and_dtype_change_the_numbers():
    p = make_plan(details("llama-3.1-8b"), A10, max_model_len=8192)
    assert p.max_model_len == 8192 and "KV_CACHE_LIMITS_CONTEXT" not in p.warning_codes
    assert p.max_concurrent_sequences == p.kv_cache_bytes // (131072 * 8192)
    f32 = make_plan(details("qwen2.5-0.5b"), A100, dtype="float32")
    assert f32.weights_bytes == 494032768 * 4 and f32.kv_bytes_per_token == 12288 * 2


def test_weights_exceeding_gpu_with_forced_vllm_does_not_fit():
    p = make_plan(details("mixtral-8x7b-v0.1"), A100, engine="vllm")
    assert not p.fits and p.engine is None
    assert {"WEIGHTS_EXCEED_GPU_MEMORY", "DOES_NOT_FIT"} <= set(p.warning_codes)
    dnf = next(w for w in p.warnings if w.code == "DOES_NOT_FIT")
    assert "quantized" in dnf.message and "--max-model-len" in dnf.message


def test_not_safetensors_and_remote_code_warnings():
    p = make_plan(details("qwen2.5-0.5b", fmt="pytorch"), A100)
    assert "NOT_SAFETENSORS" in p.warning_codes
    assert "pickled PyTorch" in next(w.message for w in p.warnings if w.code == "NOT_SAFETENSORS")
    assert "NOT_SAFETENSORS" not in make_plan(details("qwen2.5-0.5b"), A100).warning_codes
    p = make_plan(details("deepseek-v2-lite"), A100x2)
    assert "REMOTE_CODE_REQUIRED" in p.warning_codes
    assert any("MLA" in n for n in p.notes)


def test_bad_arguments_name_the_flag():
    d = details("qwen2.5-0.5b")
    with pytest.raises(UsageError, match="--max-model-len"):
        make_plan(d, A100, max_model_len=10**6)
    with pytest.raises(UsageError, match="--gpu-memory-utilization"):
        make_plan(d, A100, gpu_memory_utilization=1.5)
    with pytest.raises(UsageError, match="--dtype"):
        make_plan(d, A100, dtype="int3")
    with pytest.raises(UsageError, match="--engine"):
        make_plan(d, A100, engine="llama.cpp")


CONTRACT_KEYS = {
    "engine", "device", "fits", "dtype", "weights_bytes", "kv_bytes_per_token", "max_model_len",
    "max_concurrent_sequences", "tensor_parallel_size", "gpu_memory_utilization", "reasons", "warnings",
}


def test_to_dict_has_the_contract_keys_and_is_json():
    for target in (A100, CPU64, T4):
        d = make_plan(details("mixtral-8x7b-v0.1"), target).to_dict()
        assert CONTRACT_KEYS <= set(d)
        assert all(set(w) == {"code", "message"} for w in d["warnings"])
        assert json.loads(json.dumps(d)) == d
        assert isinstance(d["weights_bytes"], int) and isinstance(d["kv_bytes_per_token"], int)


# ------------------------------------------------------------- the demo model

def test_plan_of_the_demo_model_directory(tiny_model_dir):
    from ezrunner.core.demo_model import PRESETS

    n = PRESETS["tiny"].parameter_count()
    cpu = make_plan(str(tiny_model_dir), hardware.manual_profile(ram_gib=8))
    assert (cpu.engine, cpu.device, cpu.fits, cpu.max_model_len) == ("transformers", "cpu", True, 2048)
    assert cpu.dtype == "float32" and cpu.weights_bytes == 4 * n
    assert cpu.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4
    assert cpu.warnings == []
    gpu = make_plan(tiny_model_dir, A10)
    assert (gpu.engine, gpu.device, gpu.dtype, gpu.weights_bytes) == ("vllm", "cuda", "bfloat16", 2 * n)
    assert gpu.max_concurrent_sequences == 256  # capped at vLLM's max_num_seqs


def _cli(*args):
    return subprocess.run([EZRUNNER, *args], capture_output=True, text=True, timeout=60)


def test_cli_plan_json_of_the_demo_model(tiny_model_dir):
    p = _cli("plan", str(tiny_model_dir), "--cpu-only", "--ram", "8", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert CONTRACT_KEYS <= set(d)
    assert (d["engine"], d["device"], d["fits"], d["max_model_len"]) == ("transformers", "cpu", True, 2048)


def test_cli_plan_table(tiny_model_dir):
    p = _cli("plan", str(tiny_model_dir), "--gpu", "t4", "--max-model-len", "1024")
    assert p.returncode == 0, p.stderr
    assert "engine" in p.stdout and "vllm" in p.stdout and "float16" in p.stdout
    assert "BF16_UNSUPPORTED" in p.stdout and "why:" in p.stdout


def test_cli_plan_that_does_not_fit_exits_1(tmp_path):
    model = tmp_path / "mixtral-config-only"
    model.mkdir()
    (model / "config.json").write_text((CONFIGS / "mixtral-8x7b-v0.1.json").read_text())
    p = _cli("plan", str(model), "--gpu", "a100-80g", "--ram", "64", "--json")
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["fits"] is False and "DOES_NOT_FIT" in [w["code"] for w in d["warnings"]]
    assert d["weights_bytes"] == 2 * 46_702_792_704


def test_kv_heads_are_replicated_when_tp_exceeds_them():
    # Qwen2.5-7B has 4 KV heads and 28 attention heads; on 8 x T4 in fp16 it needs TP 2 (28 % 4 == 0, 28 % 8 != 0).
    p = make_plan(details("qwen2.5-7b"), hardware.preset_profile("T4", 8, ram_gib=64))
    assert (p.engine, p.tensor_parallel_size, p.dtype) == ("vllm", 2, "float16")
    # A Mixtral with 2 KV heads needs TP 8 on T4s: each GPU keeps one KV head, so per token 8 heads are stored.
    data = json.loads((CONFIGS / "mixtral-8x7b-v0.1.json").read_text())
    data.update(num_key_value_heads=2)
    d = ModelDetails(model="x", source="local", config=modelinfo.parse_config(data),
                     files=[WeightFile("model.safetensors", None, "safetensors")])
    _fill_parameters_from_config(d)
    q = make_plan(d, hardware.preset_profile("T4", 8, ram_gib=64))
    assert q.tensor_parallel_size == 8 and q.kv_bytes_per_token == 2 * 32 * 2 * 128 * 2
    assert q.max_concurrent_sequences == q.kv_cache_bytes // (4 * q.kv_bytes_per_token * q.max_model_len)
    assert any("replicated" in r for r in q.reasons)


def test_v100_gets_vllm_with_a_version_note():
    p = make_plan(details("qwen2.5-0.5b"), hardware.preset_profile("V100", 1, ram_gib=64))
    assert (p.engine, p.dtype) == ("vllm", "float16") and "BF16_UNSUPPORTED" in p.warning_codes
    assert any("7.5" in n for n in p.notes)


def test_rich_renderable_and_text_show_the_same_content():
    import io

    from ezrunner.core.plan import format_plan_text, plan_rows
    from rich.console import Console

    from ezrunner.cli.plan import plan_renderable

    p = make_plan(details("llama-3.1-8b"), A10)
    buf = io.StringIO()
    Console(file=buf, width=100, color_system=None).print(plan_renderable(p))
    rich_text, plain = buf.getvalue(), format_plan_text(p)
    for label, value in plan_rows(p):
        assert label in rich_text and value in rich_text and value in plain
    for text in (rich_text, plain):
        assert "KV_CACHE_LIMITS_CONTEXT" in text and "why:" in text


def test_busy_gpu_in_a_probed_profile_gets_a_note():
    from ezrunner.core.hardware import GpuInfo, HardwareProfile

    busy = HardwareProfile(gpus=[GpuInfo(0, "NVIDIA A10", 24 * 2**30, "8.6", "GPU-x", 3 * 2**30)], ram_total=64 * 2**30)
    p = make_plan(details("qwen2.5-0.5b"), busy)
    assert any("GPU 0 had only 3.0 GiB free" in n for n in p.notes)
    assert not any("free when probed" in n for n in make_plan(details("qwen2.5-0.5b"), A10).notes)


def test_plan_options_and_keywords_give_the_same_plan():
    from ezrunner.core.plan import PlanOptions

    opts = PlanOptions(max_model_len=8192, dtype="float16", gpu_memory_utilization=0.8, engine="vllm")
    by_options = make_plan(details("llama-3.1-8b"), A10, opts)
    by_keywords = make_plan(details("llama-3.1-8b"), A10, max_model_len=8192, dtype="float16",
                            gpu_memory_utilization=0.8, engine="vllm")
    assert by_options.to_dict() == by_keywords.to_dict()
    with pytest.raises(TypeError, match="not both"):
        make_plan(details("llama-3.1-8b"), A10, opts, dtype="float16")
    with pytest.raises(UsageError, match="--dtype"):
        make_plan(details("llama-3.1-8b"), A10, PlanOptions(dtype="int3"))
