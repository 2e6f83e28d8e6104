"""The built-in demo model: a real, tiny Hugging Face model directory made on the spot.

It is a Llama-architecture causal LM with random weights in safetensors, a small
byte-level BPE tokenizer trained on the fly with ``tokenizers``, and a chat
template. ``transformers`` loads it like any hub model, so the whole pipeline
(plan, pack, serve, chat) can be exercised offline. The tests use the same
generator.

Only numpy and tokenizers are needed (no torch): safetensors is written by hand,
it is an 8-byte header length, a JSON header and the raw little-endian tensors.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ezrunner.core.errors import UsageError

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

# A small, fixed corpus so that the tokenizer (and so the model) is reproducible.
_CORPUS = """\
ezrunner packs a model and an inference engine into one offline Docker bundle.
An operator carries the bundle to an air-gapped server, verifies it, loads it, runs it and chats with it.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Hello! How are you today? I am fine, thank you. What would you like to know about the weather?
The system answers questions about models, memory, tokens, context length and GPUs.
Large language models predict the next token from the previous tokens in the context window.
A transformer layer has attention heads, key value heads, a feed forward network and normalisation.
Numbers: zero one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 10 100 1000.
Questions and answers, user and assistant, system prompt, temperature, top p, max tokens, stop.
"""


@dataclass(frozen=True)
class DemoModelSpec:
    """The shape of the generated model (a Llama config, in its own terms)."""

    hidden_size: int = 64
    intermediate_size: int = 172
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 512
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    dtype: str = "bfloat16"  # bfloat16 | float16 | float32
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        kv = self.num_key_value_heads * self.head_dim
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
        for n in range(self.num_hidden_layers):
            p = f"model.layers.{n}."
            shapes[p + "self_attn.q_proj.weight"] = (h, h)
            shapes[p + "self_attn.k_proj.weight"] = (kv, h)
            shapes[p + "self_attn.v_proj.weight"] = (kv, h)
            shapes[p + "self_attn.o_proj.weight"] = (h, h)
            shapes[p + "mlp.gate_proj.weight"] = (i, h)
            shapes[p + "mlp.up_proj.weight"] = (i, h)
            shapes[p + "mlp.down_proj.weight"] = (h, i)
            shapes[p + "input_layernorm.weight"] = (h,)
            shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes["model.norm.weight"] = (h,)
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (v, h)
        return shapes

    def parameter_count(self) -> int:
        return sum(math.prod(shape) for shape in self.tensor_shapes().values())


PRESETS: dict[str, DemoModelSpec] = {
    # Fast enough for every test: ~0.1 M parameters.
    "tiny": DemoModelSpec(),
    # The benchmark model: a 512-wide, 8-layer Llama, ~34 M parameters.
    "small": DemoModelSpec(
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=8192,
        tie_word_embeddings=False,
    ),
}

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_ST_DTYPE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tok


def _tensor_bytes(rng, shape: tuple[int, ...], dtype: str, is_norm: bool) -> bytes:
    import numpy as np

    if is_norm:
        arr = np.ones(shape, dtype=np.float32)
    else:
        arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    if dtype == "float32":
        return arr.astype("<f4").tobytes()
    if dtype == "float16":
        return arr.astype("<f2").tobytes()
    # bfloat16: the upper 16 bits of the float32, rounded to nearest even.
    bits = arr.astype("<f4").view("<u4")
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype("<u2").tobytes()


def write_safetensors(path: Path, spec: DemoModelSpec) -> None:
    """Write the random weights of ``spec`` as one safetensors file, tensor by tensor."""
    import numpy as np

    rng = np.random.default_rng(spec.seed)
    width = _DTYPE_BYTES[spec.dtype]
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    shapes = spec.tensor_shapes()
    for name, shape in shapes.items():
        n = width * math.prod(shape)
        header[name] = {"dtype": _ST_DTYPE[spec.dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name, shape in shapes.items():
            fh.write(_tensor_bytes(rng, shape, spec.dtype, name.endswith("norm.weight")))


def _config(spec: DemoModelSpec, tok) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "torch_dtype": spec.dtype,
        "bos_token_id": tok.token_to_id("<|begin_of_text|>"),
        "eos_token_id": tok.token_to_id("<|im_end|>"),
        "pad_token_id": tok.token_to_id("<|pad|>"),
        "use_cache": True,
    }


def _generation_config(tok) -> dict:
    return {
        "bos_token_id": tok.token_to_id("<|begin_of_text|>"),
        "eos_token_id": [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|end_of_text|>")],
        "pad_token_id": tok.token_to_id("<|pad|>"),
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
    }


def _tokenizer_config(spec: DemoModelSpec) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|pad|>",
        "add_bos_token": False,
        "model_max_length": spec.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }


_SPECIAL_TOKENS_MAP = {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>"}


def _readme(spec: DemoModelSpec, preset: str) -> str:
    return (
        "# ezrunner demo model\n\nA tiny Llama-architecture model with random weights, generated "
        f"offline by ezrunner (preset `{preset}`, {spec.parameter_count():,} parameters). "
        "Its answers are noise; it exists to test packing, serving and chat end to end.\n\n"
        f"```json\n{json.dumps(asdict(spec), indent=2)}\n```\n"
    )


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write_model_files(work: Path, spec: DemoModelSpec, preset: str) -> None:
    """Every file of the model directory, into ``work``."""
    tok = _train_tokenizer(spec.vocab_size)
    # The trainer may stop short of the vocab size on a small corpus; the
    # embedding keeps the configured size, which transformers accepts.
    tok.save(str(work / "tokenizer.json"))
    _write_json(work / "config.json", _config(spec, tok))
    _write_json(work / "generation_config.json", _generation_config(tok))
    _write_json(work / "tokenizer_config.json", _tokenizer_config(spec))
    _write_json(work / "special_tokens_map.json", _SPECIAL_TOKENS_MAP)
    write_safetensors(work / "model.safetensors", spec)
    (work / "README.md").write_text(_readme(spec, preset), encoding="utf-8")


def _spec(preset: str, overrides: dict) -> DemoModelSpec:
    if preset not in PRESETS:
        raise UsageError(f"unknown demo model preset {preset!r}", hint=f"choose one of: {', '.join(PRESETS)}")
    spec = replace(PRESETS[preset], **overrides)
    if spec.dtype not in _DTYPE_BYTES:
        raise UsageError(f"unsupported dtype {spec.dtype!r} for the demo model", hint="bfloat16, float16 or float32")
    if spec.hidden_size % spec.num_attention_heads or spec.num_attention_heads % spec.num_key_value_heads:
        raise UsageError("hidden_size must divide by the heads, and the heads by the KV heads")
    return spec


def write_demo_model(dest: str | os.PathLike[str], preset: str = "tiny", **overrides) -> Path:
    """Write a complete model directory at ``dest`` and return its path.

    The folder is built under a temporary name beside ``dest`` and renamed into
    place at the end, so an interrupted run never leaves a half-written model.
    ``dest`` must not exist yet, or be empty.
    """
    spec = _spec(preset, overrides)
    target = Path(dest)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} already exists and is not empty", hint="choose another folder or remove it")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_model_files(work, spec, preset)
        os.chmod(work, 0o755)  # mkdtemp makes it 0700; images read it as a non-root user
        if target.exists():
            target.rmdir()
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target
