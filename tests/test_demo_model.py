"""The generated demo model is a real Hugging Face model directory."""

from __future__ import annotations

import json
import struct

import pytest
from ezrunner.core.demo_model import PRESETS, write_demo_model
from ezrunner.core.errors import UsageError


def test_layout(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    assert not [n for n in names if n.endswith(".part") or n.startswith(".")]
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert "chat_template" in json.loads((tiny_model_dir / "tokenizer_config.json").read_text())


def test_safetensors_header_matches_the_parameter_count(tiny_model_dir):
    raw = (tiny_model_dir / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__")
    count = 0
    for entry in header.values():
        size = 1
        for d in entry["shape"]:
            size *= d
        count += size
        assert entry["dtype"] == "BF16"
    assert count == PRESETS["tiny"].parameter_count()
    assert len(raw) == 8 + n + 2 * count


def test_transformers_loads_and_generates(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == PRESETS["tiny"].parameter_count()
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "Hello"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert tok.decode(enc["input_ids"][0]).endswith("<|im_start|>assistant\n")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 5 or int(out[0, -1]) in (tok.eos_token_id,)


def test_refuses_a_non_empty_folder_and_leaves_it(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(UsageError):
        write_demo_model(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import ezrunner.core.demo_model as dm

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dm, "write_safetensors", boom)
    with pytest.raises(KeyboardInterrupt):
        write_demo_model(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_small_preset_is_at_least_30m_parameters():
    assert PRESETS["small"].parameter_count() >= 30_000_000


# sha256 prefixes recorded at 67b4606, before write_demo_model was split. tokenizer.json is left
# out: its bytes follow the installed `tokenizers` release, not this code.
DEMO_FILES = {
    (): {
        "README.md": "42ef2e8bb08ecba0", "config.json": "84de70870a4e9d72", "generation_config.json": "559e1548aa2f65ce",
        "model.safetensors": "a6831182405f6e60", "special_tokens_map.json": "d83c217698e495a3",
        "tokenizer_config.json": "8ea197742b3a75a2",
    },
    (("dtype", "float32"), ("num_hidden_layers", 1)): {
        "README.md": "1c1c72d478769eda", "config.json": "6b657fc33dcac340", "generation_config.json": "559e1548aa2f65ce",
        "model.safetensors": "d0a252b304217d8f", "special_tokens_map.json": "d83c217698e495a3",
        "tokenizer_config.json": "8ea197742b3a75a2",
    },
}


@pytest.mark.parametrize("overrides", list(DEMO_FILES), ids=["tiny", "tiny-fp32-1-layer"])
def test_demo_model_files_are_unchanged(tmp_path, overrides):
    import hashlib
    import os

    path = write_demo_model(tmp_path / "m", **dict(overrides))
    got = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in path.iterdir() if f.name != "tokenizer.json"}
    assert got == DEMO_FILES[overrides]
    assert os.stat(path).st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_bad_demo_model_arguments(tmp_path):
    with pytest.raises(UsageError, match="unknown demo model preset 'huge'"):
        write_demo_model(tmp_path / "a", preset="huge")
    with pytest.raises(UsageError, match="unsupported dtype 'int8'"):
        write_demo_model(tmp_path / "b", dtype="int8")
    with pytest.raises(UsageError, match="hidden_size must divide"):
        write_demo_model(tmp_path / "c", num_key_value_heads=3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="already exists and is not empty"):
        write_demo_model(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert write_demo_model(tmp_path / "empty") == tmp_path / "empty"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file"]
