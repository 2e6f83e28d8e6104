"""KV-cache bytes as vLLM allocates them, layer by layer.

vLLM gives every attention layer a ``KVCacheSpec`` (vllm/v1/kv_cache_interface.py):

* full attention: ``2 × kv_heads × head_dim × dtype_bytes`` per token
  (``FullAttentionSpec.real_page_size_bytes``);
* MLA (DeepSeek-V2/V3, Kimi-K2, GLM-5): one latent of ``kv_lora_rank +
  qk_rope_head_dim`` per token, one "head" (``MLAAttentionSpec``);
* sliding-window layers keep at most ``window − 1 + max_num_batched_tokens``
  tokens, chunked-local layers ``chunk + max_num_batched_tokens``
  (``SlidingWindowSpec`` / ``ChunkedLocalAttentionSpec.max_memory_usage_bytes``);
* Mamba and linear-attention layers keep a fixed state per sequence (``MambaSpec``);
* encoder-only models keep nothing (``EncoderOnlyAttentionSpec``).

:class:`KvLayout` keeps the part that grows with the context (bytes per token)
apart from the bounded part (bytes per sequence), so that the plan can report the
long-context cost separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ezrunner.core.modelinfo import ModelConfig, _language_model, is_encoder

MAX_NUM_BATCHED_TOKENS = 2048  # vLLM's default chunk; bounds the sliding-window cache


@dataclass(frozen=True)
class KvLayout:
    """One model's KV cache at one KV dtype."""

    per_token: int  # bytes per token of the layers whose cache grows with the context
    windowed: tuple[tuple[int, int], ...] = ()  # (window, bytes per token) of bounded layers
    state_per_sequence: int = 0  # Mamba / linear-attention state
    kinds: dict[str, int] = field(default_factory=dict)  # layer kind -> how many

    def per_sequence(self, length: int) -> int:
        """The cache of one sequence of ``length`` tokens."""
        bounded = sum(min(w - 1 + MAX_NUM_BATCHED_TOKENS, length) * b for w, b in self.windowed)
        return self.per_token * length + bounded + self.state_per_sequence

    def fixed(self, length: int) -> int:
        """What one sequence costs beyond ``per_token × length``."""
        return self.per_sequence(length) - self.per_token * length


def _text(cfg: ModelConfig) -> dict[str, Any]:
    return _language_model(cfg.raw) if cfg.raw else {}


def _pattern_kinds(raw: dict[str, Any], n: int) -> list[str] | None:
    """The per-layer kind from whichever key the config uses, or None (all full attention)."""
    types = raw.get("layer_types")
    if isinstance(types, list) and len(types) >= n:
        return [str(t) for t in types[:n]]
    pattern = raw.get("hybrid_override_pattern")  # Nemotron-H: M mamba, * attention, - / E MLP
    if isinstance(pattern, str) and pattern:
        return [{"M": "mamba", "*": "full_attention"}.get(c, "mlp") for c in pattern]
    if isinstance(raw.get("block_configs"), list):  # Nemotron-NAS: some blocks drop attention
        return ["none" if (b.get("attention") or {}).get("no_op") else "full_attention" for b in raw["block_configs"]]
    return None


def _default_kinds(cfg: ModelConfig, raw: dict[str, Any]) -> list[str]:
    n, mt = cfg.num_hidden_layers, (cfg.model_type or "")
    chunk, no_rope = raw.get("attention_chunk_size"), raw.get("no_rope_layers")
    if chunk and not (isinstance(no_rope, list) and len(no_rope) >= n):  # transformers' Llama-4 default
        every = int(raw.get("no_rope_layer_interval") or 4)
        no_rope = [int((i + 1) % every != 0) for i in range(n)]
    if chunk:  # Llama-4: the rope layers are chunked-local, every no_rope_layer_interval-th is global
        return ["chunked_attention" if no_rope[i] else "full_attention" for i in range(n)]
    if cfg.sliding_window and mt == "gemma2":
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    step = raw.get("sliding_window_pattern")
    if cfg.sliding_window and isinstance(step, int) and step > 1:  # Gemma-3: every step-th layer is global
        return ["full_attention" if (i + 1) % step == 0 else "sliding_attention" for i in range(n)]
    return ["sliding_attention" if cfg.sliding_window else "full_attention"] * n


def layer_kinds(cfg: ModelConfig) -> list[str]:
    raw = _text(cfg)
    return _pattern_kinds(raw, cfg.num_hidden_layers) or _default_kinds(cfg, raw)


def _full_bytes(cfg: ModelConfig, raw: dict[str, Any], b: float, glob: bool) -> int:
    if cfg.is_mla:
        return int(((cfg.kv_lora_rank or 0) + (cfg.qk_rope_head_dim or 0)) * b)
    heads, hd = cfg.num_key_value_heads, cfg.head_dim
    if glob:  # Gemma-4's global layers have their own head shape
        heads = int(raw.get("num_global_key_value_heads") or heads)
        hd = int(raw.get("global_head_dim") or hd)
    return int(2 * heads * hd * b)


def _mamba_state(raw: dict[str, Any], b: float) -> int:
    """Mamba2 conv + SSM state, or a gated-delta-net (linear attention) one, per layer."""
    if raw.get("linear_num_value_heads"):
        kd = int(raw.get("linear_num_key_heads") or 0) * int(raw.get("linear_key_head_dim") or 0)
        vh, vd = int(raw["linear_num_value_heads"]), int(raw.get("linear_value_head_dim") or 0)
        conv = (int(raw.get("linear_conv_kernel_dim") or 4) - 1) * (2 * kd + vh * vd)
        return int((conv + vh * int(raw.get("linear_key_head_dim") or 0) * vd) * b)
    heads, hdim = int(raw.get("mamba_num_heads") or 0), int(raw.get("mamba_head_dim") or 0)
    state, groups = int(raw.get("ssm_state_size") or 0), int(raw.get("n_groups") or 1)
    conv = (int(raw.get("conv_kernel") or 4) - 1) * (heads * hdim + 2 * groups * state)
    return int((conv + heads * hdim * state) * b)


def kv_layout(cfg: ModelConfig, kv_dtype_bytes: float) -> KvLayout:
    """The KV cache of ``cfg`` as vLLM allocates it (see the module docstring)."""
    if is_encoder(cfg):
        return KvLayout(0, kinds={"encoder": cfg.num_hidden_layers})
    raw, kinds = _text(cfg), layer_kinds(cfg)
    per_token, state, windowed = 0, 0, []
    window = {"sliding_attention": cfg.sliding_window, "chunked_attention": raw.get("attention_chunk_size")}
    for kind in kinds:
        if kind in ("full_attention", "attention"):
            per_token += _full_bytes(cfg, raw, kv_dtype_bytes, glob="global_head_dim" in raw)
        elif kind in window and window[kind]:
            windowed.append((int(window[kind]), _full_bytes(cfg, raw, kv_dtype_bytes, glob=False)))
        elif kind in ("mamba", "linear_attention"):
            state += _mamba_state(raw, kv_dtype_bytes)
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return KvLayout(per_token, tuple(windowed), state, counts)


def kv_notes(cfg: ModelConfig, layout: KvLayout) -> list[str]:
    """How the KV figure was reached, where it is not plain full attention."""
    notes: list[str] = []
    if "encoder" in layout.kinds:
        return ["encoder model: no KV cache (embeddings are computed in one pass)"]
    if cfg.is_mla:
        notes.append(f"MLA attention: vLLM caches one latent of kv_lora_rank {cfg.kv_lora_rank} + "
                     f"qk_rope_head_dim {cfg.qk_rope_head_dim} per layer and token")
    bounded = {k: n for k, n in layout.kinds.items() if k not in ("full_attention", "attention", "mlp", "none")}
    if bounded:
        what = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(bounded.items()))
        notes.append(f"{what} layers: their cache is bounded per sequence ({layout.fixed(1 << 30):,} bytes at "
                     f"most), only the {layout.kinds.get('full_attention', 0) + layout.kinds.get('attention', 0)} "
                     "full-attention layers grow with the context")
    return notes
