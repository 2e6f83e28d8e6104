"""Parameter counts and weight bytes from ``config.json`` alone.

Two ways, best first:

* ``transformers-meta``: when transformers (and torch) can be imported, the
  model is built on the meta device (no memory) and its parameters counted.
  Exact for every architecture transformers knows. Imported inside the
  function, so the light install stays free of torch.
* ``config-estimate``: a generic structural count from the config keys
  (embeddings, attention or MLA, dense or MoE MLP, norms, biases, a vision
  tower). Exact for the classic dense/MoE layouts, an estimate elsewhere.

Both give the count split into parts (embeddings, head, dense weights, experts,
vectors, vision) so that a ``quantization_config`` can be applied to the parts a
quantizer packs: :func:`weight_bytes`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

TRANSFORMERS_META = "transformers-meta"
CONFIG_ESTIMATE = "config-estimate"
# Parts of a model: which a quantizer packs is decided in weight_bytes().
PARTS = ("embed", "head", "dense", "experts", "vector", "vision")
_VISION_WORDS = ("vision", "visual", "multi_modal_projector", "mm_projector", "audio", "image_newline", "patch_embed")


@dataclass(frozen=True)
class ParamCount:
    parts: dict[str, int]
    source: str

    @property
    def total(self) -> int:
        return sum(self.parts.values())


# ------------------------------------------------------------ transformers-meta


def _hf_config(raw: dict[str, Any]) -> Any:
    """A transformers config object for ``raw`` (its architecture's own config class when
    the model_type is unknown, e.g. kimi_k2 with DeepseekV3ForCausalLM); remote code never runs."""
    import transformers

    data = {k: v for k, v in raw.items() if k not in ("auto_map", "quantization_config")}
    try:
        return transformers.AutoConfig.for_model(**data)
    except (ValueError, KeyError):
        arch = (raw.get("architectures") or [None])[0]
        cls = getattr(transformers, str(arch), None)
        config_class = getattr(cls, "config_class", None)
        if config_class is None:
            raise
        return config_class(**{k: v for k, v in data.items() if k != "model_type"})


def text_config_defaults(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The language model's config with transformers' defaults filled in (a Llava config names
    only what differs from LlamaConfig); None without transformers or for an unknown model."""
    try:
        import logging

        logging.getLogger("transformers").setLevel(logging.ERROR)
        hf = _hf_config(raw)
        text = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
        return {k: v for k, v in text.to_dict().items() if v is not None}
    except Exception:  # noqa: BLE001 - no transformers, or it does not know this config
        return None


def _model_classes(raw: dict[str, Any]) -> list[Any]:
    import transformers

    arch = (raw.get("architectures") or [None])[0]
    named = getattr(transformers, str(arch), None)
    autos = ("AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModel")
    return ([named] if named is not None else []) + [getattr(transformers, a) for a in autos]


def _build_meta(raw: dict[str, Any]) -> Any:
    cfg = _hf_config(raw)  # transformers first: without it, torch is never imported
    import torch

    for cls in _model_classes(raw):
        try:
            with torch.device("meta"):
                if hasattr(cls, "from_config"):
                    return cls.from_config(cfg, trust_remote_code=False)
                return cls(cfg)
        except Exception:  # noqa: BLE001 - this class cannot build this config: try the next
            continue
    raise ValueError("no transformers class builds this config")


def _part_of(name: str, ndim: int, embed_names: set[str], head_names: set[str]) -> str:
    low = name.lower()
    if any(w in low for w in _VISION_WORDS):
        return "vision"
    if name in head_names:
        return "head"
    if name in embed_names:
        return "embed"
    if ndim < 2:
        return "vector"
    return "experts" if "experts" in low and "shared" not in low else "dense"


def _meta_parts(model: Any) -> dict[str, int]:
    import torch

    embed_names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_names = {n for n, p in model.named_parameters() if head is not None and p is getattr(head, "weight", None)}
    parts = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():  # shared (tied) tensors are listed once
        parts[_part_of(name, p.dim(), embed_names, head_names)] += p.numel()
    return parts


@functools.lru_cache(maxsize=64)
def _meta_count_cached(text: str) -> tuple[tuple[str, int], ...] | None:
    try:
        import logging
        import warnings

        logging.getLogger("transformers").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = _meta_parts(_build_meta(json.loads(text)))
    except Exception:  # noqa: BLE001 - no transformers, or it cannot build this config
        return None
    return tuple(parts.items())


def transformers_meta_count(raw: dict[str, Any]) -> ParamCount | None:
    """The parameter count transformers gives on the meta device; None when transformers
    is not installed or does not know the architecture."""
    parts = _meta_count_cached(json.dumps(raw, sort_keys=True, default=str))
    return None if parts is None else ParamCount(dict(parts), TRANSFORMERS_META)


def config_count(cfg: Any) -> ParamCount | None:
    """The count of a parsed ``config.json`` (a ``modelinfo.ModelConfig``): transformers' meta
    count when it can build the config, else the structural estimate; None without vocab_size.
    Search, ``--info`` and the plan all count through here, so they agree and name one source."""
    from ezrunner.core import modelinfo

    counted = transformers_meta_count(cfg.raw) if cfg.raw else None
    if counted is None:
        parts = modelinfo.count_parts(cfg)
        counted = None if parts is None else ParamCount(parts, CONFIG_ESTIMATE)
    return counted


# ------------------------------------------------------------- weight bytes

# Bytes per packed weight, and which parts a quantizer leaves alone (see docs/commands/plan.md).
UNQUANTIZED_PARTS = {"embed", "head", "vector", "vision"}


def _scheme_bytes(bits: float, group: int | None, scale_bytes: float, zero: bool = False) -> float:
    extra = (scale_bytes + (bits / 8 if zero else 0)) / group if group else 0.0
    return bits / 8 + extra


def _compressed_tensors_bytes(q: dict[str, Any]) -> float | None:
    for group in (q.get("config_groups") or {}).values():
        w = (group or {}).get("weights") or {}
        if w.get("num_bits"):
            gs = w.get("group_size") if w.get("strategy") == "group" else None
            return _scheme_bytes(float(w["num_bits"]), gs, 2.0, zero=not w.get("symmetric", True))
    return None


def _modelopt_bytes(q: dict[str, Any]) -> float | None:
    algo = str(q.get("quant_algo") or (q.get("quantization") or {}).get("quant_algo") or "").upper()
    if "FP4" in algo:
        return _scheme_bytes(4, int(q.get("group_size") or 16), 1.0)  # fp8 scale per 16
    if "FP8" in algo:
        return 1.0
    return None


def quantized_bytes_per_weight(q: dict[str, Any] | None) -> float | None:
    """Bytes per packed weight for a ``quantization_config``; None when it is not understood."""
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method") or q.get("quant_type") or "").lower()
    if method == "fp8":
        block = q.get("weight_block_size")
        return 1.0 + (4.0 / (block[0] * block[1]) if block else 0.0)  # fp32 scale per block
    if method == "mxfp4":
        return _scheme_bytes(4, 32, 1.0)  # e8m0 scale per 32
    if method in ("awq", "gptq", "gptq_marlin", "awq_marlin"):
        gs = q.get("group_size") or q.get("q_group_size") or 128
        return _scheme_bytes(float(q.get("bits") or q.get("w_bit") or 4), gs if gs > 0 else None, 2.0, zero=True)
    if method == "bitsandbytes":
        return _scheme_bytes(4, 64, 4.0) if q.get("load_in_4bit") else 1.0
    if method == "compressed-tensors":
        return _compressed_tensors_bytes(q)
    if method == "modelopt":
        return _modelopt_bytes(q)
    return None


def _ignored_parts(q: dict[str, Any]) -> set[str]:
    """Parts a config's ignore list keeps unquantized: an ignored self-attention (gpt-oss)
    keeps the dense part as is, since only the experts are packed there."""
    ignored = q.get("modules_to_not_convert") or q.get("ignore") or q.get("ignored_layers") or []
    text = " ".join(str(x) for x in ignored)
    return {"dense"} if "self_attn" in text else set()


def weight_bytes(count: ParamCount, dtype_bytes: float, quantization: dict[str, Any] | None) -> int:
    """Bytes of the weights: unquantized parts at ``dtype_bytes``, packed parts at the
    quantization's bytes per weight (scales and zero points included)."""
    qb = quantized_bytes_per_weight(quantization)
    skip = UNQUANTIZED_PARTS | (_ignored_parts(quantization) if qb is not None else set())
    total = 0.0
    for part, n in count.parts.items():
        total += n * (qb if qb is not None and part not in skip else dtype_bytes)
    return int(total)
