"""Issue 13: the plan on real config.json files (tests/fixtures/configs, sources in its README).

Oracles: transformers' own parameter count on the meta device, and vLLM's KV-cache rule as
vllm/v1/kv_cache_interface.py states it (FullAttentionSpec: 2 × kv_heads × head_size × dtype;
MLAAttentionSpec: one head of kv_lora_rank + qk_rope_head_dim).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from ezrunner.core import hardware, kvcache, modelinfo, paramcount
from ezrunner.core.discovery import ModelDetails
from ezrunner.core.modelinfo import WeightFile
from ezrunner.core.paramcount import config_count
from ezrunner.core.plan import make_plan

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.json"))
# The structural count (the light install's fallback) is exact for these layouts.
ESTIMATE_EXACT = {
    "all-minilm-l6-v2", "deepseek-ai__deepseek-r1", "deepseek-ai__deepseek-v3", "deepseek-v2-lite", "gemma-2-9b",
    "gpt2", "llama-3.1-8b", "meta-llama__meta-llama-3.1-405b", "meta-llama__meta-llama-3.1-70b",
    "minimaxai__minimax-m2.5", "mistral-7b-v0.1", "mistralai__mixtral-8x22b-v0.1", "mixtral-8x7b-v0.1",
    "moonshotai__kimi-k2-instruct", "nvidia__qwen3-235b-a22b-nvfp4", "phi-3-mini-4k-instruct", "qwen2.5-0.5b",
    "qwen2.5-7b", "qwen__qwen3-0.6b", "qwen__qwen3-235b-a22b-fp8", "qwen__qwen3-30b-a3b", "qwen__qwen3-32b",
    "qwen__qwen3-32b-fp8", "qwen__qwen3-8b", "qwen__qwen3-coder-480b-a35b-instruct", "bert-base-uncased-classifier",
    "llava-1.5-7b-hf", "zai-org__glm-5", "zai-org__glm-5-fp8", "openai__gpt-oss-20b", "openai__gpt-oss-120b",
    "bigcode__starcoder2-7b", "cohereforai__aya-23-8b", "nvidia__nemotron-h-56b-base-8k",
    "nvidia__nvidia-nemotron-3-nano-30b-a3b-bf16", "nvidia__nvidia-nemotron-3-super-120b-a12b-fp8",
    "qwen__qwen3.5-27b", "qwen__qwen3.5-35b-a3b", "qwen__qwen3.5-397b-a17b", "moonshotai__kimi-k2.5",
    "qwen__qwen3-vl-235b-a22b-instruct",
}
# The estimate's remaining error (percent, against the meta count) where it is not within 0.1 %; what
# it misses is in docs/commands/plan.md ("How far the structural estimate is off"). A change that makes
# one worse fails here; one that makes it better should tighten the bound.
ESTIMATE_ERROR = {
    "deepseek-ai__deepseek-v3.2": 0.13,
    "google__gemma-4-26b-a4b": 3.0,
    "nvidia__gemma-4-31b-it-nvfp4": 2.2,
    "meta-llama__llama-4-scout-17b-16e-instruct": 6.1,
    "meta-llama__llama-4-maverick-17b-128e-instruct": 1.7,
    "qwen__qwen3-vl-2b-instruct": 4.6,
    "qwen__qwen3-vl-8b-instruct": 1.7,
    "qwen__qwen3-vl-30b-a3b-instruct": 0.4,
    "stepfun-ai__step-3.7-flash": 1.1,
    "xiaomimimo__mimo-v2-flash": 0.22,
}


def raw(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


def cfg(name: str) -> modelinfo.ModelConfig:
    return modelinfo.parse_config(raw(name), where=name)


def meta_oracle(data: dict) -> int | None:
    """transformers' own count: the checkpoint's architecture class built on the meta device."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    data = {k: v for k, v in data.items() if k not in ("auto_map", "quantization_config")}
    arch = getattr(transformers, (data.get("architectures") or ["-"])[0], None)
    try:
        conf = transformers.AutoConfig.for_model(**data)
    except ValueError:
        if arch is None:
            return None
        conf = arch.config_class(**{k: v for k, v in data.items() if k != "model_type"})
    for cls in [arch, transformers.AutoModelForCausalLM, transformers.AutoModelForImageTextToText]:
        try:
            with torch.device("meta"):
                model = cls.from_config(conf) if hasattr(cls, "from_config") else cls(conf)
            return sum(p.numel() for p in model.parameters())
        except Exception:  # noqa: BLE001 - try the next class
            continue
    return None


def test_at_least_forty_real_configs_with_sources():
    readme = (CONFIGS / "README.md").read_text(encoding="utf-8")
    assert len(NAMES) >= 40
    for name in NAMES[:]:
        if name not in ("deepseek-v2-lite", "gemma-2-9b", "llama-3.1-8b", "mistral-7b-v0.1", "mixtral-8x7b-v0.1",
                        "phi-3-mini-4k-instruct", "qwen2.5-0.5b", "qwen2.5-7b"):
            assert f"| {name}.json |" in readme


@pytest.mark.parametrize("name", NAMES)
def test_parameters_match_transformers_meta_count(name):
    expected = meta_oracle(raw(name))
    counted = config_count(cfg(name))
    if expected is None:  # transformers does not know it: the structural estimate answers
        assert counted is not None and counted.source == paramcount.CONFIG_ESTIMATE
        return
    assert counted.source == paramcount.TRANSFORMERS_META
    assert abs(counted.total - expected) <= expected * 0.001


@pytest.mark.parametrize("name", sorted(ESTIMATE_EXACT))
def test_structural_estimate_within_a_tenth_of_a_percent(name):
    expected = meta_oracle(raw(name))
    estimate = sum(modelinfo.count_parts(cfg(name)).values())
    assert abs(estimate - expected) <= expected * 0.001


@pytest.mark.parametrize("name", sorted(ESTIMATE_ERROR))
def test_structural_estimate_error_table(name):
    expected = meta_oracle(raw(name))
    estimate = sum(modelinfo.count_parts(cfg(name)).values())
    assert abs(estimate - expected) / expected * 100 <= ESTIMATE_ERROR[name]


def test_every_config_has_an_estimate_bound():
    no_oracle = {"thudm__chatglm2-6b", "nvidia__llama-3_3-nemotron-super-49b-v1", "xiaomimimo__mimo-7b-base"}
    assert set(NAMES) == ESTIMATE_EXACT | set(ESTIMATE_ERROR) | no_oracle


def test_estimate_of_configs_transformers_cannot_build():
    # ChatGLM2-6B: the checkpoint index's total_size / 2 bytes less the 32-element rotary buffer
    # (tests/fixtures/configs/README.md); Nemotron-Super-49B: the model card's 49.9B parameters.
    assert sum(modelinfo.count_parts(cfg("thudm__chatglm2-6b")).values()) == 12_487_168_064 // 2 - 32
    nas = sum(modelinfo.count_parts(cfg("nvidia__llama-3_3-nemotron-super-49b-v1")).values())
    assert abs(nas - 49.9e9) <= 49.9e9 * 0.001
    # its attention blocks group 8 query heads per KV head: vLLM's per-layer KV heads
    assert kvcache.kv_layout(cfg("nvidia__llama-3_3-nemotron-super-49b-v1"), 2).per_token == 49 * vllm_full(8, 128)


def vllm_full(kv_heads: int, head_dim: int, b: int = 2) -> int:
    return 2 * kv_heads * head_dim * b  # FullAttentionSpec.real_page_size_bytes / block_size


@pytest.mark.parametrize("name, layers, per_layer", [
    ("llama-3.1-8b", 32, vllm_full(8, 128)),
    ("meta-llama__meta-llama-3.1-405b", 126, vllm_full(8, 128)),
    ("qwen__qwen3-32b", 64, vllm_full(8, 128)),
    ("qwen__qwen3-30b-a3b", 48, vllm_full(4, 128)),
    ("mistralai__mixtral-8x22b-v0.1", 56, vllm_full(8, 128)),
    ("gpt2", 12, vllm_full(12, 64)),
    ("llava-1.5-7b-hf", 32, vllm_full(32, 128)),
    # MLA: one head of kv_lora_rank + qk_rope_head_dim (MLAAttentionSpec)
    ("deepseek-ai__deepseek-v3", 61, (512 + 64) * 2),
    ("deepseek-ai__deepseek-r1", 61, (512 + 64) * 2),
    ("moonshotai__kimi-k2-instruct", 61, (512 + 64) * 2),
    ("deepseek-v2-lite", 27, (512 + 64) * 2),
])
def test_kv_bytes_per_token_follow_vllm(name, layers, per_layer):
    layout = kvcache.kv_layout(cfg(name), 2)
    assert layout.per_token == layers * per_layer
    assert kvcache.kv_layout(cfg(name), 1).per_token == layers * per_layer // 2  # --kv-cache-dtype fp8


def test_hybrid_and_sliding_layers_are_bounded():
    qwen35 = kvcache.kv_layout(cfg("qwen__qwen3.5-27b"), 2)
    assert qwen35.kinds["linear_attention"] == 3 * qwen35.kinds["full_attention"]
    assert qwen35.state_per_sequence > 0 and qwen35.per_token == qwen35.kinds["full_attention"] * vllm_full(4, 256)
    gemma2 = kvcache.kv_layout(cfg("gemma-2-9b"), 2)
    assert gemma2.per_token == 21 * vllm_full(8, 256) and len(gemma2.windowed) == 21
    assert gemma2.fixed(8192) == 21 * min(4096 - 1 + 2048, 8192) * vllm_full(8, 256)  # SlidingWindowSpec
    scout = kvcache.kv_layout(cfg("meta-llama__llama-4-scout-17b-16e-instruct"), 2)
    assert scout.kinds == {"chunked_attention": 36, "full_attention": 12}
    assert kvcache.kv_layout(cfg("all-minilm-l6-v2"), 2).per_sequence(512) == 0


@pytest.mark.parametrize("name", NAMES)
def test_every_config_is_planned(name):
    d = ModelDetails(model=name, source="local", config=cfg(name), files=[WeightFile("m.safetensors", None, "safetensors")])
    p = make_plan(d, hardware.preset_profile("H200", 8, ram_gib=2048))
    assert p.parameters and p.weights_bytes > 0
    assert p.sources["weights"] in ("transformers-meta", "config-estimate")


def test_fp8_deepseek_v3_fits_eight_h200():
    d = ModelDetails(model="ds3", source="local", config=cfg("deepseek-ai__deepseek-v3"),
                     files=[WeightFile("m.safetensors", None, "safetensors")])
    p = make_plan(d, hardware.preset_profile("H200", 8, ram_gib=2048))
    assert p.fits and p.engine == "vllm" and p.quantization == "fp8"
    assert p.weights_bytes < 0.55 * p.parameters * 2  # about one byte per weight, not two
    assert p.kv_bytes_per_token == 61 * 576 * 2


def test_quantization_config_sets_bytes_per_weight():
    assert paramcount.quantized_bytes_per_weight(raw("openai__gpt-oss-20b")["quantization_config"]) == 0.5 + 1 / 32
    fp8 = raw("qwen__qwen3-32b-fp8")["quantization_config"]
    assert paramcount.quantized_bytes_per_weight(fp8) == pytest.approx(1 + 4 / (128 * 128))
    awq = {"quant_method": "awq", "bits": 4, "group_size": 128}
    assert paramcount.quantized_bytes_per_weight(awq) == pytest.approx(0.5 + (2 + 0.5) / 128)
    assert paramcount.quantized_bytes_per_weight({"quant_method": "bitsandbytes", "load_in_8bit": True}) == 1.0


def test_encoder_is_planned_on_the_embeddings_path():
    d = ModelDetails(model="minilm", source="local", config=cfg("all-minilm-l6-v2"),
                     files=[WeightFile("m.safetensors", None, "safetensors")])
    p = make_plan(d, hardware.preset_profile("T4", 1, ram_gib=16))
    assert p.task == "embed" and p.engine == "transformers" and p.kv_bytes_per_token == 0
    assert p.max_model_len == 512 and p.max_concurrent_sequences >= 1 and p.sources["kv_cache"] == "none (encoder)"


def _data_bytes(path: Path) -> int:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return path.stat().st_size - 8 - n


def test_quantized_safetensors_are_sized_by_their_real_bytes(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    tensors = {
        "w_fp8": torch.zeros(256, 128, dtype=torch.float8_e4m3fn),
        "w_fp8_scale": torch.ones(2, 1, dtype=torch.float32),
        "w_int4_packed": torch.zeros(256, 16, dtype=torch.int32),  # 8 int4 values per int32
        "w_int4_scales": torch.ones(2, 128, dtype=torch.float16),
        "w_int4_zeros": torch.zeros(2, 16, dtype=torch.int32),
        "norm": torch.ones(128, dtype=torch.bfloat16),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    summary = modelinfo.summarize_safetensors([path])
    assert modelinfo.bytes_at_dtype(summary.parameters_by_dtype, None) == _data_bytes(path)
    # cast to bf16: only the 16-bit floating tensors change size; FP8, packed ints and the F32 scales keep theirs
    expected = 256 * 128 + 2 * 4 + 256 * 16 * 4 + 2 * 128 * 2 + 2 * 16 * 4 + 128 * 2
    assert modelinfo.bytes_at_dtype(summary.parameters_by_dtype, "bfloat16") == expected


def test_preset_target_never_uses_this_machines_ram():
    import argparse

    from ezrunner.cli._target import add_target_arguments, profile_from_args

    parser = argparse.ArgumentParser()
    add_target_arguments(parser)
    profile = profile_from_args(parser.parse_args(["--gpu", "T4"]))
    assert profile.ram_total is None
    assert profile_from_args(parser.parse_args(["--gpu", "T4", "--ram", "32"])).ram_total == 32 * 2**30
