"""Unit checks of the server's load-time decisions (dtype, capability, pooling)."""

from __future__ import annotations

import json

import pytest
import torch
from ezrunner.images.server.config import LoadError
from ezrunner.images.server.engine import (
    EMBED,
    GENERATE,
    EmbeddingEngine,
    cpu_supports,
    declared_capability,
    resolve_dtype,
)


def test_cpu_dtype_auto_follows_native_support():
    bf16_native = cpu_supports("bfloat16")
    assert resolve_dtype("auto", "cpu", "bfloat16") == (torch.bfloat16 if bf16_native else torch.float32)
    fp16_native = cpu_supports("float16")
    assert resolve_dtype("auto", "cpu", "float16") == (torch.float16 if fp16_native else torch.float32)
    assert resolve_dtype("auto", "cpu", "float32") == torch.float32
    assert resolve_dtype("auto", "cpu", None) == torch.float32


def test_gpu_keeps_the_weights_dtype_and_explicit_dtypes_win():
    assert resolve_dtype("auto", "cuda", "bfloat16") == torch.bfloat16
    assert resolve_dtype("auto", "cuda", "float32") == torch.float32
    assert resolve_dtype("float32", "cpu", "bfloat16") == torch.float32
    assert resolve_dtype("bfloat16", "cpu", "float32") == torch.bfloat16
    with pytest.raises(LoadError, match="--dtype"):
        resolve_dtype("int4", "cpu", "float32")


def _model(tmp_path, name, config, files=()):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    for f in files:
        (d / f).write_text("[]")
    return d


def test_capability_is_declared_from_the_model_files(tmp_path, tiny_model_dir, minilm_dir):
    assert declared_capability(tiny_model_dir) == GENERATE
    assert declared_capability(minilm_dir) == EMBED
    assert declared_capability(_model(tmp_path, "gpt2", {"architectures": ["GPT2LMHeadModel"]})) == GENERATE
    assert declared_capability(_model(tmp_path, "bert", {"architectures": ["BertModel"]})) == EMBED
    st = _model(tmp_path, "st", {"architectures": ["XLMRobertaModel"]}, files=["modules.json"])
    assert declared_capability(st) == EMBED
    with pytest.raises(LoadError, match="architectures"):
        declared_capability(_model(tmp_path, "clf", {"architectures": ["BertForSequenceClassification"]}))


def test_pooling_comes_from_the_sentence_transformers_config(tmp_path, minilm_dir):
    assert EmbeddingEngine._pooling_from_config(minilm_dir) == ("mean", True)
    d = tmp_path / "cls"
    (d / "1_Pooling").mkdir(parents=True)
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                             "pooling_mode_mean_tokens": False}))
    assert EmbeddingEngine._pooling_from_config(d) == ("cls", False)
    assert EmbeddingEngine._pooling_from_config(tmp_path) == ("mean", False)  # no config: mean


class _Cfg:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def get_text_config(self):
        return self


def _engine_for(layers, kv_heads, head_dim, ctx, conc, dtype=torch.float32):
    from types import SimpleNamespace

    from ezrunner.images.server.engine import GenerationEngine

    g = GenerationEngine.__new__(GenerationEngine)
    g.model = SimpleNamespace(config=_Cfg(num_hidden_layers=layers, num_attention_heads=32,
                                          num_key_value_heads=kv_heads, head_dim=head_dim), dtype=dtype)
    g.device, g.max_model_len, g.max_concurrency = "cpu", ctx, conc
    return g


def test_cpu_cache_plan_fits_cache_and_mask_in_a_quarter_of_ram(monkeypatch):
    from ezrunner.images.server import engine

    monkeypatch.setattr(engine, "_available_ram", lambda: 16 * 1024**3)
    small = _engine_for(8, 4, 64, 2048, 32, torch.bfloat16)
    assert small._cache_plan(256) == (8 * 32 + 1, 2048)  # everything fits: 32 full sequences, 2048-token chunks
    assert small.max_model_len == 2048

    big = _engine_for(32, 32, 128, 32768, 32)  # 1 MiB of KV per token in float32
    blocks, chunk = big._cache_plan(256)
    kv = blocks * 256 * 2 * 32 * 32 * 128 * 4
    mask = chunk * (blocks * 256 + chunk) * 4
    assert kv + mask <= 4 * 1024**3
    assert big.max_model_len == (blocks - 1) * 256 < 32768  # longer requests get a 400, never a stuck cache
