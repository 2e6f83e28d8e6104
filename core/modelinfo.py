"""What a model *is*, from its files: ``config.json`` parsing, the structural
parameter count (``config-estimate``), safetensors headers and the inventory of
weight files in a folder. KV-cache bytes are core/kvcache.py's; the count that
prefers transformers' meta device is core/paramcount.py's.

Everything here is pure Python (json + struct); no hub client, no torch.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ezrunner.core.errors import UsageError

# Bytes per element of the dtypes that matter for planning.
DTYPE_BYTES: dict[str, int] = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float64": 8,
    "int8": 1,
    "uint8": 1,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}

# safetensors header dtype -> (canonical torch name, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[str, float]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "U32": ("uint32", 4),
    "I16": ("int16", 2),
    "U16": ("uint16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "F8_E8M0": ("float8_e8m0fnu", 1),
    "F4": ("float4", 0.5),
    "F6_E2M3": ("float6", 0.75),
    "F6_E3M2": ("float6", 0.75),
}
# Floating dtypes whose weights get cast when the plan picks another dtype.
CASTABLE = {"F32", "F16", "BF16", "F64"}

_WEIGHT_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".safetensors", "safetensors"),
    (".gguf", "gguf"),
    (".bin", "pytorch"),
    (".pt", "pytorch"),
    (".pth", "pytorch"),
)
# Files that end like weights but are not model weights.
_NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"}

def weight_format(name: str) -> str | None:
    """The weight format of a file name: safetensors, pytorch, gguf, or None."""
    base = os.path.basename(name)
    if base in _NOT_WEIGHTS:
        return None
    for suffix, fmt in _WEIGHT_SUFFIXES:
        if base.endswith(suffix):
            return fmt
    return None


def normalise_dtype(value: Any) -> str | None:
    """``torch.bfloat16`` / ``bf16`` / ``BF16`` -> ``bfloat16``; unknown -> the text as is."""
    if value is None:
        return None
    text = str(value).strip().lower().removeprefix("torch.")
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    text = aliases.get(text, text)
    for st, (name, _) in SAFETENSORS_DTYPES.items():
        if text == st.lower():
            return name
    return text


@dataclass(frozen=True)
class WeightFile:
    path: str  # relative to the model folder / repo root
    size: int | None
    format: str  # safetensors | pytorch | gguf


@dataclass
class ModelConfig:
    """The planning-relevant part of a transformers ``config.json``."""

    model_type: str | None
    architectures: list[str]
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int | None
    intermediate_size: int | None
    max_position_embeddings: int | None
    tie_word_embeddings: bool
    dtype: str | None
    num_experts: int | None = None
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int | None = None
    sliding_window: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    auto_map: dict[str, Any] | None = None
    quantization: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def architecture(self) -> str | None:
        return self.architectures[0] if self.architectures else None

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.auto_map)

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("raw", None)
        d["architecture"] = self.architecture
        d["trust_remote_code"] = self.trust_remote_code
        return d


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


def _int(key: str, value: Any, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # some writers emit 4096.0
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where}: key {key!r} must be an integer, got {value!r}")
    if value <= 0:
        raise UsageError(f"{where}: key {key!r} must be positive, got {value}")
    return value


def _required(cfg: dict[str, Any], where: str, key: str, *aliases: str) -> int:
    value = _first(cfg, key, *aliases)
    if value is None:
        raise UsageError(
            f"{where}: missing required key {key!r}",
            hint="the model's config.json must describe a transformer decoder (hidden_size, num_hidden_layers, num_attention_heads)",
        )
    return _int(key, value, where)


def _optional(cfg: dict[str, Any], where: str, key: str, *aliases: str) -> int | None:
    value = _first(cfg, key, *aliases)
    return None if value is None else _int(key, value, where)


_WRAPPER_KEYS = ("architectures", "auto_map", "torch_dtype", "dtype", "tie_word_embeddings", "quantization_config")


def _language_model(cfg: dict[str, Any]) -> dict[str, Any]:
    """Multimodal wrappers keep the language model under text_config; the wrapper's own keys fill gaps."""
    if "hidden_size" in cfg or not isinstance(cfg.get("text_config"), dict):
        return cfg
    merged = dict(cfg["text_config"])
    for k in _WRAPPER_KEYS:
        if k in cfg and k not in merged:
            merged[k] = cfg[k]
    return merged


def _with_defaults(top: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """A language config that leaves its shape to transformers' defaults gets them filled in
    when transformers is importable (the light install then reports the missing key)."""
    if _first(cfg, "hidden_size", "n_embd", "d_model") is not None or not isinstance(top.get("text_config"), dict):
        return cfg
    from ezrunner.core.paramcount import text_config_defaults

    defaults = text_config_defaults(top)
    return {**defaults, **cfg} if defaults else cfg


def _attention_shape(cfg: dict[str, Any], where: str) -> tuple[int, int, int, int, int]:
    """(hidden, layers, heads, KV heads, head_dim)."""
    hidden = _required(cfg, where, "hidden_size", "n_embd", "d_model")
    layers = _required(cfg, where, "num_hidden_layers", "n_layer", "num_layers")
    heads = _required(cfg, where, "num_attention_heads", "n_head")
    kv_heads = _optional(cfg, where, "num_key_value_heads", "num_kv_heads")
    if kv_heads is None and cfg.get("multi_query_attention"):
        kv_heads = _optional(cfg, where, "multi_query_group_num")  # ChatGLM
    if kv_heads is None and isinstance(cfg.get("block_configs"), list):  # Nemotron-NAS: per block
        groups = [(b.get("attention") or {}).get("n_heads_in_group") for b in cfg["block_configs"] if isinstance(b, dict)]
        kv_heads = heads // int(next((g for g in groups if g), 1))
    if kv_heads is None:
        kv_heads = 1 if cfg.get("multi_query") else heads
    head_dim = _optional(cfg, where, "head_dim", "kv_channels")
    if head_dim is None:
        if hidden % heads:
            raise UsageError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        head_dim = hidden // heads
    return hidden, layers, heads, kv_heads, head_dim


def _quantization(top: dict[str, Any], cfg: dict[str, Any]) -> str | None:
    qcfg = top.get("quantization_config") or cfg.get("quantization_config")
    if not isinstance(qcfg, dict):
        return None
    return str(qcfg.get("quant_method") or qcfg.get("quant_type") or "quantized")


def _sliding_window(cfg: dict[str, Any]) -> int | None:
    sliding = None if cfg.get("use_sliding_window") is False else cfg.get("sliding_window")
    return sliding if isinstance(sliding, int) and sliding > 0 else None


def parse_config(cfg: dict[str, Any], *, where: str = "config.json") -> ModelConfig:
    """Parse a config dict; a missing required key raises UsageError naming it."""
    if not isinstance(cfg, dict):
        raise UsageError(f"{where}: not a JSON object")
    top, cfg = cfg, _with_defaults(cfg, _language_model(cfg))
    hidden, layers, heads, kv_heads, head_dim = _attention_shape(cfg, where)
    num_experts = _optional(cfg, where, "num_local_experts", "n_routed_experts", "num_experts")
    arch = cfg.get("architectures") or top.get("architectures") or []
    return ModelConfig(
        model_type=cfg.get("model_type") or top.get("model_type"),
        architectures=[str(a) for a in arch] if isinstance(arch, list) else [str(arch)],
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_optional(cfg, where, "vocab_size", "padded_vocab_size"),
        intermediate_size=_optional(cfg, where, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"),
        max_position_embeddings=_optional(cfg, where, "max_position_embeddings", "n_positions", "max_seq_len",
                                          "seq_length", "max_sequence_length"),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", top.get("tie_word_embeddings", False))),
        dtype=normalise_dtype(_first(cfg, "torch_dtype", "dtype") or _first(top, "torch_dtype", "dtype")),
        num_experts=num_experts if num_experts and num_experts > 1 else None,
        num_experts_per_tok=_optional(cfg, where, "num_experts_per_tok", "moe_topk"),
        moe_intermediate_size=_optional(cfg, where, "moe_intermediate_size"),
        sliding_window=_sliding_window(cfg),
        kv_lora_rank=_optional(cfg, where, "kv_lora_rank"),
        qk_rope_head_dim=_optional(cfg, where, "qk_rope_head_dim"),
        auto_map=top.get("auto_map") or cfg.get("auto_map") or None,
        quantization=_quantization(top, cfg),
        raw=top,
    )


def load_config(path: str | os.PathLike[str]) -> ModelConfig:
    """Read and parse ``config.json`` (a file, or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{p}: no config.json", hint="a model folder needs the config.json of a transformers model") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{p}: cannot read config.json ({str(exc).splitlines()[0]})") from None
    return parse_config(data, where=str(p))


# --------------------------------------------------------------------- counting
# A generic structural count from the config keys (the "config-estimate" source).
# core/paramcount.py prefers transformers' own count on the meta device when it can.


def _counting_raw(cfg: ModelConfig) -> dict[str, Any]:
    """The config keys the counter reads (a wrapper's text_config when there is one)."""
    return _language_model(cfg.raw) if cfg.raw else {}


def _activation(raw: dict[str, Any]) -> str:
    return str(_first(raw, "hidden_act", "hidden_activation", "activation_function") or "silu").lower()


def _gated(raw: dict[str, Any], mt: str) -> bool:
    """A gated MLP (gate, up, down) rather than a plain one (up, down)."""
    if "ffn_hidden_size" in raw:  # ChatGLM: dense_h_to_4h is fused gate+up
        return True
    act = _activation(raw)
    return act in ("silu", "swish", "swiglu") or "glu" in act or mt.startswith("gemma")


def _is_encoder(raw: dict[str, Any]) -> bool:
    archs = " ".join(str(a) for a in raw.get("architectures") or [])
    encoder_heads = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
    return "type_vocab_size" in raw or (any(h in archs for h in encoder_heads) and "CausalLM" not in archs)


def is_encoder(cfg: ModelConfig) -> bool:
    """An encoder-only model (BERT, MiniLM...): embeddings, no generation, no KV cache."""
    return _is_encoder(_counting_raw(cfg))


def _norm_params(raw: dict[str, Any], h: int) -> int:
    """One norm: RMSNorm has a weight, LayerNorm a weight and a bias."""
    layer_norm = "rms_norm_eps" not in raw and any(k in raw for k in ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))
    return 2 * h if layer_norm and raw.get("model_type") != "cohere" else h


def _all_biases(raw: dict[str, Any], mt: str) -> bool:
    return bool(raw.get("use_bias")) or mt in ("gpt2", "starcoder2") or _is_encoder(raw)


def _mla_attention(cfg: ModelConfig, raw: dict[str, Any]) -> tuple[int, int]:
    """DeepSeek's multi-head latent attention: (LoRA'd) q, the joint KV down/up projections, o."""
    h, nh = cfg.hidden_size, cfg.num_attention_heads
    nope = int(raw.get("qk_nope_head_dim") or 0)
    rope = int(raw.get("qk_rope_head_dim") or 0)
    vdim = int(raw.get("v_head_dim") or cfg.head_dim)
    q_lora = raw.get("q_lora_rank")
    kvr = cfg.kv_lora_rank or 0
    qk = nope + rope
    mats = h * q_lora + q_lora * nh * qk if q_lora else h * nh * qk
    mats += h * (kvr + rope) + kvr * nh * (nope + vdim) + nh * vdim * h
    return mats, (q_lora or 0) + kvr  # the q and kv LoRA norms


def _attention(cfg: ModelConfig, raw: dict[str, Any], mt: str) -> tuple[int, int]:
    """One layer's attention: (projection matrices, bias/norm vectors)."""
    if cfg.is_mla:
        return _mla_attention(cfg, raw)
    h, hd = cfg.hidden_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    vec = 0
    if _all_biases(raw, mt) or raw.get("attention_bias"):
        vec = q + 2 * kv + h
    elif mt in ("qwen2", "qwen2_moe") or raw.get("qkv_bias") or raw.get("add_qkv_bias"):
        vec = q + 2 * kv
    if mt in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2") or raw.get("use_qk_norm"):
        vec += 2 * hd  # q_norm and k_norm over head_dim
    return h * q + 2 * h * kv + q * h, vec


def _layer_norms(raw: dict[str, Any], h: int, mt: str) -> int:
    per = {"gemma2": 4, "gemma3": 4, "gemma3_text": 4, "cohere": 1, "cohere2": 1}.get(mt, 2)  # Cohere: one parallel block
    return per * _norm_params(raw, h)


def _dense_mlp(h: int, inter: int, gated: bool, bias: bool) -> tuple[int, int]:
    mats = (3 if gated else 2) * h * inter
    return mats, (inter * (2 if gated else 1) + h if bias else 0)


def _experts(h: int, n: int, inter: int) -> int:
    """``n`` gated experts of width ``inter``."""
    return n * 3 * h * inter


def _moe_layer(raw: dict[str, Any], layer: int) -> bool:
    """Whether ``layer`` is sparse, from whichever layout keys the config has."""
    if layer in set(raw.get("mlp_only_layers") or []) or layer < int(raw.get("first_k_dense_replace") or 0):
        return False
    if raw.get("decoder_sparse_step"):
        return (layer + 1) % int(raw["decoder_sparse_step"]) == 0
    if raw.get("interleave_moe_layer_step"):
        return (layer + 1) % int(raw["interleave_moe_layer_step"]) == 0
    freq = raw.get("moe_layer_freq") or 1
    if isinstance(freq, list):  # one flag per layer (MiMo-V2)
        return layer < len(freq) and bool(freq[layer])
    return layer % int(freq) == 0


def _shared_experts(raw: dict[str, Any], h: int, mi: int) -> int:
    shared = int(raw.get("shared_expert_intermediate_size") or 0)
    if shared:
        return 3 * h * shared + h  # the shared expert and its gate
    return 3 * h * mi * int(raw.get("n_shared_experts") or 0)


def _moe_mlp(cfg: ModelConfig, raw: dict[str, Any], mt: str) -> tuple[int, int, int]:
    """(experts, dense: router + shared experts, vectors) of one sparse layer."""
    h, e = cfg.hidden_size, cfg.num_experts or 0
    mi = cfg.moe_intermediate_size or cfg.intermediate_size or 0
    vec = e if mt in ("deepseek_v3", "deepseek_v32", "glm_moe_dsa") or raw.get("topk_method") == "noaux_tc" else 0
    return _experts(h, e, mi), h * e + _shared_experts(raw, h, mi), vec


def _linear_attention(raw: dict[str, Any], h: int) -> tuple[int, int]:
    """A gated-delta-net (linear attention) mixer from the config's linear_* fields."""
    kd = int(raw.get("linear_num_key_heads") or 0) * int(raw.get("linear_key_head_dim") or 0)
    nv, vdim = int(raw.get("linear_num_value_heads") or 0), int(raw.get("linear_value_head_dim") or 0)
    vd, conv = nv * vdim, 2 * kd + nv * vdim
    mats = h * (conv + vd + 2 * nv) + conv * int(raw.get("linear_conv_kernel_dim") or 4) + vd * h
    return mats, 2 * nv + vdim  # dt_bias, A_log, the gated norm


def _mixer(cfg: ModelConfig, raw: dict[str, Any], mt: str, layer: int) -> tuple[int, int]:
    """One layer's attention: full (with Qwen3-Next's output gate) or linear, by ``layer_types``."""
    types = raw.get("layer_types")
    if isinstance(types, list) and layer < len(types) and types[layer] == "linear_attention":
        return _linear_attention(raw, cfg.hidden_size)
    mats, vec = _attention(cfg, raw, mt)
    if raw.get("attn_output_gate"):
        mats += cfg.hidden_size * cfg.num_attention_heads * cfg.head_dim
    return mats, vec


def _layer_parts(cfg: ModelConfig, raw: dict[str, Any], mt: str, layer: int) -> dict[str, int]:
    h = cfg.hidden_size
    attn, attn_vec = _mixer(cfg, raw, mt, layer)
    parts = {"dense": attn, "vector": attn_vec + _layer_norms(raw, h, mt), "experts": 0}
    if cfg.num_experts and _moe_layer(raw, layer):
        experts, dense, vec = _moe_mlp(cfg, raw, mt)
        parts["experts"] += experts
    else:
        bias = bool(raw.get("mlp_bias")) or _all_biases(raw, mt)
        dense, vec = _dense_mlp(h, cfg.intermediate_size or 4 * h, _gated(raw, mt), bias)
    parts["dense"] += dense
    parts["vector"] += vec
    return parts


# Hybrid stacks (Nemotron-H): ``hybrid_override_pattern`` names one block per character, each a
# norm and one mixer: M a Mamba2 mixer, * attention, - an MLP, E a mixture of experts.


def _mamba_mixer(raw: dict[str, Any], h: int) -> tuple[int, int]:
    """A Mamba2 mixer from the config's mamba fields: (matrices, vectors)."""
    heads = int(_first(raw, "mamba_num_heads", "mamba_n_heads") or 0)
    inner = heads * int(_first(raw, "mamba_head_dim", "mamba_d_head") or 0)
    state = int(_first(raw, "ssm_state_size", "mamba_d_state") or 0)
    conv = inner + 2 * int(_first(raw, "n_groups", "mamba_n_groups") or 1) * state
    proj = inner + conv + heads  # in_proj: z, x/B/C, dt
    mats = h * proj + inner * h + conv * int(_first(raw, "conv_kernel", "mamba_d_conv") or 4)
    vec = 3 * heads + inner  # dt_bias, A_log, D, the gated norm
    vec += conv if _first(raw, "use_conv_bias", "mamba_conv_bias") is not False else 0
    vec += proj + h if _first(raw, "mamba_proj_bias") else 0
    return mats, vec


def _plain_mlp(raw: dict[str, Any], h: int, inter: int) -> int:
    gated = _gated({**raw, "hidden_act": _first(raw, "mlp_hidden_act", "hidden_act")}, "")
    return (3 if gated else 2) * h * inter


def _hybrid_moe(cfg: ModelConfig, raw: dict[str, Any]) -> tuple[int, int]:
    """(experts, router + shared expert + latent projections) of one E block."""
    h, e = cfg.hidden_size, cfg.num_experts or 0
    latent = int(raw.get("moe_latent_size") or 0)
    experts = e * _plain_mlp(raw, latent or h, cfg.moe_intermediate_size or 0)
    shared = _plain_mlp(raw, h, int(raw.get("moe_shared_expert_intermediate_size") or 0))
    return experts, h * e + shared + 2 * h * latent


def _block_parts(cfg: ModelConfig, raw: dict[str, Any], kind: str) -> dict[str, int]:
    h = cfg.hidden_size
    parts = {"dense": 0, "experts": 0, "vector": h}  # the block's norm
    if kind == "M":
        parts["dense"], vec = _mamba_mixer(raw, h)
        parts["vector"] += vec
    elif kind == "*":
        parts["dense"] = _attention(cfg, raw, "")[0]
    elif kind == "-":
        parts["dense"] = _plain_mlp(raw, h, cfg.intermediate_size or 4 * h)
    elif kind == "E":
        parts["experts"], parts["dense"] = _hybrid_moe(cfg, raw)
    return parts



def _nas_block_parts(cfg: ModelConfig, block: dict[str, Any]) -> dict[str, int]:
    """A Nemotron-NAS (DeciLM) block: its attention and FFN each dropped (no_op), replaced by one
    linear, or kept with their own KV grouping and ``ffn_mult`` (vLLM's nemotron_nas.py)."""
    h, heads, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    attn, ffn = block.get("attention") or {}, block.get("ffn") or {}
    parts = {"dense": 0, "experts": 0, "vector": 0}
    if not attn.get("no_op"):
        kv = heads // int(attn.get("n_heads_in_group") or 1) * hd
        parts["dense"] += h * h if attn.get("replace_with_linear") else 2 * h * heads * hd + 2 * h * kv
        parts["vector"] += h
    if not ffn.get("no_op"):
        inter = -(-int(2 * float(ffn.get("ffn_mult") or 0) * h / 3) // 256) * 256  # _ffn_mult_to_intermediate_size
        parts["dense"] += h * h if ffn.get("replace_with_linear") else 3 * h * inter
        parts["vector"] += h
    return parts


def _stack_parts(cfg: ModelConfig, raw: dict[str, Any], mt: str) -> list[dict[str, int]]:
    """Every decoder layer's parts, from whichever layout the config describes."""
    pattern = raw.get("hybrid_override_pattern")
    if isinstance(pattern, str) and pattern:
        return [_block_parts(cfg, raw, kind) for kind in pattern]
    if isinstance(raw.get("block_configs"), list):
        return [_nas_block_parts(cfg, b) for b in raw["block_configs"]]
    return [_layer_parts(cfg, raw, mt, layer) for layer in range(cfg.num_hidden_layers)]


# Families whose transformers config class ties the head to the embeddings when config.json does not say.
_TIED_BY_DEFAULT = ("starcoder2", "cohere")


def _embedding_parts(cfg: ModelConfig, raw: dict[str, Any], mt: str) -> dict[str, int]:
    v, h = cfg.vocab_size or 0, cfg.hidden_size
    embed = v * h
    if mt == "gpt2" or _is_encoder(raw):  # learned positions (and BERT's token types)
        embed += (cfg.max_position_embeddings or 0) * h + int(raw.get("type_vocab_size") or 0) * h
    tied = cfg.tie_word_embeddings or mt.startswith("gemma") or mt == "gpt2" or _is_encoder(raw)
    if "tie_word_embeddings" not in raw and "tie_word_embeddings" not in cfg.raw:
        tied = tied or mt.startswith(_TIED_BY_DEFAULT)
    return {"embed": embed, "head": 0 if tied else v * h}


def _vision_parts(raw_top: dict[str, Any], text_hidden: int) -> int:
    """A ViT tower and its projector from ``vision_config`` (an estimate)."""
    vc = raw_top.get("vision_config")
    if not isinstance(vc, dict) or not vc.get("hidden_size"):
        return 0
    h = int(vc["hidden_size"])
    inter = int(vc.get("intermediate_size") or 4 * h)
    layers = int(vc.get("num_hidden_layers") or vc.get("depth") or 0)
    patch = int(vc.get("patch_size") or 14) ** 2 * int(vc.get("num_channels") or vc.get("in_channels") or 3)
    per_layer = 4 * h * h + 4 * h + 2 * h * inter + inter + h + 4 * h
    projector = h * text_hidden + text_hidden * text_hidden
    return layers * per_layer + patch * int(vc.get("temporal_patch_size") or 1) * h + projector


def count_parts(cfg: ModelConfig) -> dict[str, int] | None:
    """The structural count (the ``config-estimate`` source) split into parts (see
    core/paramcount.py); None when the config lacks vocab_size.

    Counted: embeddings (with learned positions and token types where the family has them);
    per layer the attention projections or MLA, biases (``attention_bias``, Qwen2's q/k/v,
    ``use_bias``, encoders), the MLP or every MoE expert plus the router and shared experts,
    the norms; hybrid stacks block by block (``hybrid_override_pattern``: Mamba2 mixers,
    attention, MLP, MoE; Nemotron-NAS ``block_configs``); the final norm; the lm_head unless
    tied; a vision tower from ``vision_config``."""
    if cfg.vocab_size is None:
        return None
    raw, mt = _counting_raw(cfg), (cfg.model_type or "").lower()
    parts = {**_embedding_parts(cfg, raw, mt), "dense": 0, "experts": 0, "vector": 0}
    for layer_parts in _stack_parts(cfg, raw, mt):
        for k, n in layer_parts.items():
            parts[k] += n
    parts["vector"] += _norm_params(raw, cfg.hidden_size)  # the final norm (BERT: the embeddings' norm)
    if _is_encoder(raw):
        parts["dense"] += cfg.hidden_size * cfg.hidden_size
        parts["vector"] += cfg.hidden_size  # the pooler
    parts["vision"] = _vision_parts(cfg.raw, cfg.hidden_size)
    return parts


# ------------------------------------------------------------------ safetensors


@dataclass(frozen=True)
class SafetensorsSummary:
    parameters_by_dtype: dict[str, int]  # safetensors dtype code (BF16, F32, ...) -> element count

    @property
    def parameters(self) -> int:
        return sum(self.parameters_by_dtype.values())


MAX_HEADER = 100 * 1024 * 1024


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file (8-byte little-endian length, JSON)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise UsageError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > MAX_HEADER:
            raise UsageError(f"{path}: not a safetensors file (header length {n})")
        data = fh.read(n)
    try:
        header = json.loads(data)
    except ValueError as exc:
        raise UsageError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise UsageError(f"{path}: corrupt safetensors header")
    return header


def summarize_safetensors(paths: list[str | os.PathLike[str]]) -> SafetensorsSummary:
    """Element counts per dtype over the headers of ``paths`` (the data is never read)."""
    params: dict[str, int] = {}
    for path in paths:
        for name, info in read_safetensors_header(path).items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            dt = str(info.get("dtype"))
            params[dt] = params.get(dt, 0) + math.prod(int(d) for d in info.get("shape") or [])
    return SafetensorsSummary(params)


def bytes_at_dtype(parameters_by_dtype: dict[str, int], dtype: str | None) -> int:
    """Weight bytes once floating tensors are cast to ``dtype`` (None: keep stored dtypes).
    Quantized / integer tensors keep their stored size, and so do the F32 tensors of a
    quantized checkpoint (its scales: vLLM keeps them in float32)."""
    total = 0.0
    target = DTYPE_BYTES.get(dtype or "", None)
    quantized = any(code.upper() not in CASTABLE for code in parameters_by_dtype)
    for code, n in parameters_by_dtype.items():
        code_u = code.upper()
        if target is not None and code_u in CASTABLE and not (quantized and code_u == "F32"):
            total += n * target
        else:
            total += n * SAFETENSORS_DTYPES.get(code_u, ("", 2))[1]
    return int(total)


def inventory(folder: str | os.PathLike[str]) -> list[WeightFile]:
    """The weight files under a model folder, sorted by path (hidden folders skipped)."""
    root = Path(folder)
    out: list[WeightFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            fmt = weight_format(name)
            if fmt is None:
                continue
            full = Path(dirpath) / name
            try:
                size = full.stat().st_size
            except OSError:
                size = None
            out.append(WeightFile(str(full.relative_to(root)), size, fmt))
    return out


def primary_format(files: list[WeightFile]) -> str | None:
    """The format a loader would use: safetensors first, then pytorch, then gguf."""
    formats = {f.format for f in files}
    for fmt in ("safetensors", "pytorch", "gguf"):
        if fmt in formats:
            return fmt
    return None


def loadable_weights(files: list[WeightFile]) -> list[WeightFile]:
    """Only the files of the primary format (what pack would ship and load)."""
    fmt = primary_format(files)
    return [f for f in files if f.format == fmt]
