"""The memory/engine plan: which engine, on which device, in which dtype, with how
much context and concurrency, on how many GPUs, and why.

Memory model (all sizes in bytes):

* **Weights** come from the safetensors headers when the files are at hand,
  otherwise from the hub's safetensors metadata (per-dtype element counts),
  otherwise from a count of ``config.json`` (:func:`paramcount.config_count`:
  transformers' meta device, else the structural estimate) with its
  ``quantization_config``; floating tensors are counted at the planned dtype,
  quantized ones as stored. :class:`WeightsFigure` names the source.
* **KV cache per token** as vLLM allocates it, layer by layer
  (:mod:`kvcache`): full attention ``2 × kv_heads × head_dim × bytes``, MLA one
  latent, sliding-window / chunked / Mamba layers bounded per sequence.
* **GPU budget** per GPU = ``memory × gpu_memory_utilization − weights/TP −
  reserve``; what is left, times TP, is the KV cache.
* **Reserve** (per GPU) = ``RUNTIME_RESERVE`` (1 GiB: CUDA context, cuBLAS and
  NCCL workspaces, CUDA graphs — vLLM's "non-torch memory" plus graph capture)
  + the activation peak of a profiling pass: ``MAX_NUM_BATCHED_TOKENS`` (2048,
  vLLM's default chunk) × (4 × hidden + 2 × MLP width) × dtype_bytes, plus fp32
  logits for ``MAX_NUM_SEQS`` (256) sequences × vocab. For Llama-3.1-8B this
  is ≈ 1.3 GiB, on top of the 10 % that utilization 0.9 already keeps free.
  vLLM measures the real peak at boot; this estimate errs on the safe side of
  its defaults so that a plan that "fits" boots.

Engine rule: vLLM on NVIDIA GPUs with compute capability ≥ 7.0 when the weights
plus one full-length sequence fit (smallest power-of-two TP dividing the attention
heads; if no TP fits the full length, the largest TP with a shorter context and a
``KV_CACHE_LIMITS_CONTEXT`` warning); otherwise Transformers on one GPU when the
weights fit; otherwise Transformers on CPU when RAM fits; otherwise it does not fit.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ezrunner.core import kvcache, modelinfo, paramcount
from ezrunner.core.errors import UsageError
from ezrunner.core.hardware import GiB, HardwareProfile
from ezrunner.core.units import human_bytes

# ---------------------------------------------------------------- tunables (documented)
RUNTIME_RESERVE = 1 * GiB  # per GPU: CUDA context, workspaces, CUDA graphs
MAX_NUM_BATCHED_TOKENS = 2048  # vLLM default for the OpenAI server
MAX_NUM_SEQS = 256  # vLLM default concurrency cap
TRANSFORMERS_MAX_CONCURRENCY = 32  # the embedded server's own default (--max-concurrency): one continuous batch
MIN_CONTEXT = 2048  # below this a capped context is not worth serving
VLLM_MIN_CC = 7.0  # vLLM's GPU requirement (docs: getting_started/installation/gpu)
BF16_MIN_CC = 8.0
# vLLM's quantization kernels per compute capability (docs: features/quantization, "Supported
# Hardware"): FP8 W8A8 on Ada/Hopper (8.9), FP8/FP4/MXFP4 weight-only via Marlin from Ampere (8.0),
# AWQ from Turing (7.5), GPTQ and bitsandbytes from Volta (7.0).
QUANT_MIN_CC = {"fp8": 8.0, "mxfp4": 8.0, "modelopt": 8.0, "compressed-tensors": 8.0, "awq": 7.5,
                "awq_marlin": 8.0, "gptq_marlin": 8.0, "gptq": 7.0, "bitsandbytes": 7.0}
FP8_NATIVE_CC = 8.9
KV_CACHE_DTYPES = ("auto", "fp8")
RAM_UTILIZATION = 0.90  # of the target's RAM total
CPU_RESERVE = int(1.5 * GiB)  # OS, Python, torch runtime on CPU
DTYPES = ("auto", "bfloat16", "float16", "float32")
ENGINES = ("auto", "vllm", "transformers")

# Stable warning codes.
WEIGHTS_EXCEED_GPU_MEMORY = "WEIGHTS_EXCEED_GPU_MEMORY"
KV_CACHE_LIMITS_CONTEXT = "KV_CACHE_LIMITS_CONTEXT"
BF16_UNSUPPORTED = "BF16_UNSUPPORTED"
CPU_FALLBACK = "CPU_FALLBACK"
RAM_INSUFFICIENT = "RAM_INSUFFICIENT"
REMOTE_CODE_REQUIRED = "REMOTE_CODE_REQUIRED"
NOT_SAFETENSORS = "NOT_SAFETENSORS"
DOES_NOT_FIT = "DOES_NOT_FIT"
QUANTIZATION_UNSUPPORTED = "QUANTIZATION_UNSUPPORTED"
WARNING_CODES = (
    WEIGHTS_EXCEED_GPU_MEMORY,
    KV_CACHE_LIMITS_CONTEXT,
    BF16_UNSUPPORTED,
    CPU_FALLBACK,
    RAM_INSUFFICIENT,
    REMOTE_CODE_REQUIRED,
    NOT_SAFETENSORS,
    DOES_NOT_FIT,
    QUANTIZATION_UNSUPPORTED,
)


@dataclass(frozen=True)
class PlanWarning:
    code: str
    message: str


@dataclass
class Plan:
    model: str
    engine: str | None  # vllm | transformers | None
    device: str | None  # cuda | cpu | None
    fits: bool
    dtype: str
    weights_bytes: int
    kv_bytes_per_token: int
    max_model_len: int
    max_concurrent_sequences: int
    tensor_parallel_size: int
    gpu_memory_utilization: float
    reasons: list[str] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)
    # Extras (beyond the contract keys)
    model_max_model_len: int | None = None
    reserve_bytes: int = 0  # per GPU (cuda) or for the runtime (cpu)
    kv_cache_bytes: int = 0  # KV-cache room in total
    memory_bytes: int = 0  # memory per GPU (cuda) or RAM total (cpu)
    trust_remote_code: bool = False
    parameters: int | None = None
    weight_format: str | None = None
    revision: str | None = None
    source: str | None = None
    target: str = ""
    notes: list[str] = field(default_factory=list)
    task: str = "generate"  # generate | embed (encoders: the Transformers embeddings path, no KV cache)
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    kv_bytes_per_sequence_bounded: int = 0  # sliding-window / chunked / Mamba state of one full-length sequence
    sources: dict[str, str] = field(default_factory=dict)  # figure -> where it came from

    @property
    def warning_codes(self) -> list[str]:
        return [w.code for w in self.warnings]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = [{"code": w.code, "message": w.message} for w in self.warnings]
        return d


def _dtype_bytes(dtype: str) -> int:
    return modelinfo.DTYPE_BYTES[dtype]


def _round_len(tokens: int) -> int:
    if tokens >= 256:
        return tokens // 256 * 256
    return tokens // 16 * 16


def gib(n: int | float) -> str:
    return human_bytes(n)


@dataclass(frozen=True)
class WeightsFigure:
    """The weights at one dtype, their parameter count and where both came from."""

    bytes: int
    parameters: int | None
    source: str  # safetensors-headers | hub-metadata | transformers-meta | config-estimate | file-sizes


def weights_figure(details: Any, dtype: str) -> WeightsFigure:
    """Weights at ``dtype``: safetensors headers / hub metadata per dtype (quantized tensors as
    stored), else a count from config.json with its quantization_config, else the files' size."""
    if details.parameters_by_dtype:
        return WeightsFigure(modelinfo.bytes_at_dtype(details.parameters_by_dtype, dtype), details.parameters,
                             details.parameters_source or "safetensors-headers")
    counted = paramcount.config_count(details.config) if details.config is not None else None
    if counted is not None:
        qcfg = details.config.raw.get("quantization_config") or modelinfo._language_model(details.config.raw).get(
            "quantization_config")
        return WeightsFigure(paramcount.weight_bytes(counted, _dtype_bytes(dtype), qcfg), counted.total, counted.source)
    total = details.weights_total_bytes
    if total:
        stored = details.dtype if details.dtype in modelinfo.DTYPE_BYTES else "bfloat16"
        return WeightsFigure(int(total * _dtype_bytes(dtype) / modelinfo.DTYPE_BYTES[stored]), None, "file-sizes")
    raise UsageError(f"{details.model}: cannot size the weights (no safetensors, no parameter count, no file sizes)")


def weights_bytes(details: Any, dtype: str) -> int:
    return weights_figure(details, dtype).bytes


def reserve_bytes(cfg: modelinfo.ModelConfig, dtype: str) -> int:
    """Per-GPU activation/runtime reserve (see the module docstring)."""
    b = _dtype_bytes(dtype)
    mlp = cfg.intermediate_size or 4 * cfg.hidden_size
    if cfg.num_experts:
        per_expert = cfg.moe_intermediate_size or cfg.intermediate_size or mlp
        mlp = max(mlp, per_expert * (cfg.num_experts_per_tok or 2))
    act = MAX_NUM_BATCHED_TOKENS * (4 * cfg.hidden_size + 2 * mlp) * b
    logits = MAX_NUM_SEQS * (cfg.vocab_size or 32000) * 4
    return int(RUNTIME_RESERVE + act + logits)


def _auto_gpu_dtype(requested: str, model_dtype: str | None) -> str:
    # auto: keep a bf16/fp16 model's dtype; serve fp32 (or unknown) models in bf16
    if requested != "auto":
        return requested
    return model_dtype if model_dtype in ("bfloat16", "float16") else "bfloat16"


def _gpu_dtype(requested: str, model_dtype: str | None, cc: float) -> tuple[str, PlanWarning | None]:
    want = _auto_gpu_dtype(requested, model_dtype)
    if want == "bfloat16" and cc < BF16_MIN_CC:
        return "float16", PlanWarning(
            BF16_UNSUPPORTED,
            f"bfloat16 needs compute capability ≥ 8.0 and this GPU has {cc:.1f}: using float16. "
            "Most bf16 models run well in fp16; if outputs look wrong pick a GPU with cc ≥ 8.0 or use --dtype float32.",
        )
    return want, None


def _add(warnings: list[PlanWarning], w: PlanWarning | None) -> None:
    if w is not None and all(x.code != w.code for x in warnings):
        warnings.append(w)


# ------------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class PlanOptions:
    """What a caller may choose. :func:`make_plan` validates it; errors name the CLI flag."""

    max_model_len: int | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    engine: str = "auto"
    revision: str | None = None
    kv_cache_dtype: str = "auto"  # auto: the model's dtype; fp8 halves a 16-bit cache


@dataclass
class _Context:
    """One planning run: the validated inputs, and what the candidates that did not fit left behind."""

    details: Any  # discovery.ModelDetails
    cfg: modelinfo.ModelConfig
    profile: HardwareProfile
    dtype: str
    engine: str
    util: float
    model_len: int  # the model's own context (2048 when config.json names none)
    desired: int  # the context to plan for
    min_len: int  # below this a capped context does not count as fitting
    notes: list[str]
    common: list[PlanWarning]  # warnings every outcome carries
    kv_cache_dtype: str = "auto"
    reasons: list[str] = field(default_factory=list)  # why candidates were passed over
    failures: list[PlanWarning] = field(default_factory=list)  # their warnings

    @property
    def task(self) -> str:
        return "embed" if modelinfo.is_encoder(self.cfg) else "generate"

    def warnings(self, *extra: PlanWarning | None, failures: bool = False) -> list[PlanWarning]:
        out = list(self.common)
        for w in (*(self.failures if failures else ()), *extra):
            _add(out, w)
        return out


@dataclass(frozen=True)
class _Figures:
    """The model's memory at one dtype."""

    dtype: str
    weights: int
    kv: kvcache.KvLayout
    parameters: int | None = None
    source: str = ""

    @property
    def kv_per_token(self) -> int:
        return self.kv.per_token


@dataclass
class _Outcome:
    """What the chosen candidate (or the does-not-fit verdict, ``engine=None``) puts in the Plan."""

    engine: str | None
    device: str | None
    figures: _Figures
    max_model_len: int
    concurrency: int
    tensor_parallel_size: int
    reasons: list[str]
    warnings: list[PlanWarning]
    reserve: int = 0
    kv_room: int = 0
    memory: int = 0


def _details_of(model: Any, revision: str | None) -> Any:
    from ezrunner.core import discovery

    if isinstance(model, discovery.ModelDetails):
        return model
    if isinstance(model, (str, os.PathLike, Path)):
        return discovery.model_details(model, revision)
    raise TypeError(f"make_plan: model must be ModelDetails, a path or an id, not {type(model).__name__}")


def _checked_utilization(opts: PlanOptions) -> float:
    """Check dtype, engine and utilization (in that order); the utilization as a float."""
    if opts.dtype not in DTYPES:
        raise UsageError(f"--dtype: unknown dtype {opts.dtype!r}", hint=f"choose one of: {', '.join(DTYPES)}")
    if opts.engine not in ENGINES:
        raise UsageError(f"--engine: unknown engine {opts.engine!r}", hint=f"choose one of: {', '.join(ENGINES)}")
    raw = opts.gpu_memory_utilization
    try:
        util = float(raw)
    except (TypeError, ValueError):
        raise UsageError(f"--gpu-memory-utilization: not a number: {raw!r}") from None
    if not 0.05 <= util <= 1.0:
        raise UsageError(f"--gpu-memory-utilization: must be between 0.05 and 1.0, got {raw!r}")
    return util


def _config_of(details: Any) -> modelinfo.ModelConfig:
    if details.config is None:
        why = "; ".join(details.notes) or "no config.json"
        raise UsageError(f"{details.model}: cannot plan without config.json ({why})")
    return details.config


def _desired_len(requested: int | None, model_len: int) -> int:
    if requested is None:
        return model_len
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 16:
        raise UsageError(f"--max-model-len: must be an integer of at least 16, got {requested!r}")
    if requested > model_len:
        raise UsageError(
            f"--max-model-len: {requested} is longer than the model's context ({model_len})",
            hint=f"use at most {model_len}",
        )
    return requested


def _common_warnings(details: Any) -> list[PlanWarning]:
    common: list[PlanWarning] = []
    if details.trust_remote_code:
        _add(common, PlanWarning(
            REMOTE_CODE_REQUIRED,
            "config.json has auto_map: the model needs its own Python code (trust_remote_code). "
            "Review that code before packing, or pick a variant that transformers supports natively.",
        ))
    fmt = details.weight_format
    if fmt != "safetensors":
        what = {"pytorch": "pickled PyTorch .bin/.pt files", "gguf": "GGUF files", None: "no weight files"}.get(fmt, str(fmt))
        _add(common, PlanWarning(
            NOT_SAFETENSORS,
            f"the weights are {what}, not safetensors: pickles can run code when loaded and GGUF is not "
            "loaded by these engines. Prefer a safetensors revision of the model.",
        ))
    return common


def _busy_gpu_notes(profile: HardwareProfile, util: float) -> list[str]:
    return [
        f"GPU {g.index} had only {human_bytes(g.memory_free)} free when probed; vLLM needs "
        f"{human_bytes(g.memory_total * util)} ({util:g} of it) free when it starts"
        for g in profile.gpus
        if g.memory_free is not None and g.memory_free < g.memory_total * util
    ]


def _checked_kv_dtype(value: str) -> str:
    if value not in KV_CACHE_DTYPES:
        raise UsageError(f"--kv-cache-dtype: unknown KV cache dtype {value!r}", hint=f"choose one of: {', '.join(KV_CACHE_DTYPES)}")
    return value


def _context(details: Any, profile: HardwareProfile, opts: PlanOptions) -> _Context:
    util = _checked_utilization(opts)
    kv_dtype = _checked_kv_dtype(opts.kv_cache_dtype)
    cfg = _config_of(details)
    notes: list[str] = kvcache.kv_notes(cfg, kvcache.kv_layout(cfg, 2))
    model_len = cfg.max_position_embeddings
    if model_len is None:
        model_len = 2048
        notes.append("config.json names no context length; assuming 2048")
    desired = _desired_len(opts.max_model_len, model_len)
    common = _common_warnings(details)
    notes.extend(_busy_gpu_notes(profile, util))
    return _Context(
        details=details, cfg=cfg, profile=profile, dtype=opts.dtype, engine=opts.engine, util=util,
        model_len=model_len, desired=desired, min_len=min(MIN_CONTEXT, desired), notes=notes, common=common,
        kv_cache_dtype=kv_dtype,
    )


# ------------------------------------------------------------- shared figures


def _figures(ctx: _Context, dtype: str) -> _Figures:
    w = weights_figure(ctx.details, dtype)
    kv_bytes = 1 if ctx.kv_cache_dtype == "fp8" else _dtype_bytes(dtype)
    return _Figures(dtype, w.bytes, kvcache.kv_layout(ctx.cfg, kv_bytes), w.parameters, w.source)


NO_LIMIT = 1 << 40  # tokens, when no layer's cache grows with the context


def _tokens_in(room: int, fig: _Figures, length: int, factor: int = 1) -> int:
    """How many tokens of one sequence's growing cache fit in ``room`` next to its bounded part."""
    left = room - fig.kv.fixed(length) * factor
    if left <= 0:
        return 0
    return left // (fig.kv_per_token * factor) if fig.kv_per_token else NO_LIMIT


def _length_in(room: int, fig: _Figures, desired: int, factor: int = 1) -> int:
    return min(desired, _round_len(_tokens_in(room, fig, desired, factor))) if room > 0 else 0


def _concurrency(room: int, fig: _Figures, length: int, cap: int, factor: int = 1) -> int:
    return int(max(1, min(cap, room // max(1, fig.kv.per_sequence(length) * factor))))


def _capped_warning(holds: str, tokens: int, desired: int, length: int, remedy: str) -> PlanWarning:
    return PlanWarning(
        KV_CACHE_LIMITS_CONTEXT,
        f"{holds} {tokens} tokens, less than the context of {desired}: max_model_len set to {length}. {remedy}",
    )


def _weights_exceed(fig: _Figures, usable: str) -> PlanWarning:
    return PlanWarning(
        WEIGHTS_EXCEED_GPU_MEMORY,
        f"the weights ({gib(fig.weights)} in {fig.dtype}) exceed the usable GPU memory ({usable}). "
        "Use more or larger GPUs (--gpu-count), a quantized variant (AWQ/GPTQ/FP8), or a smaller model.",
    )


# ----------------------------------------------------------------------- vLLM


@dataclass(frozen=True)
class _TpChoice:
    tp: int
    length: int
    room: int  # KV-cache room over all TP ranks
    factor: int  # how many times the cache is stored over the TP ranks (see _tp_factor)
    capped: bool


def _tp_sizes(cfg: modelinfo.ModelConfig, gpu_count: int) -> list[int]:
    return [tp for tp in (1, 2, 4, 8, 16, 32, 64) if tp <= gpu_count and cfg.num_attention_heads % tp == 0]


def _tp_factor(cfg: modelinfo.ModelConfig, tp: int) -> int:
    """How many times the KV cache is stored over ``tp`` GPUs: vLLM replicates KV heads when TP
    exceeds them (each GPU keeps at least one), and MLA's single latent on every GPU."""
    if cfg.is_mla:
        return tp
    nkv = cfg.num_key_value_heads
    return -(-tp // nkv) if tp > nkv else 1


def _tp_room(mem: int, util: float, fig: _Figures, reserve: int, tp: int) -> int:
    return int((mem * util - fig.weights / tp - reserve) * tp)


def _choose_tp(ctx: _Context, fig: _Figures, reserve: int, mem: int, tps: list[int]) -> _TpChoice | None:
    """The smallest TP that holds the full context, else the largest with a capped one."""
    for tp in tps:
        room, factor = _tp_room(mem, ctx.util, fig, reserve, tp), _tp_factor(ctx.cfg, tp)
        if room > 0 and _tokens_in(room, fig, ctx.desired, factor) >= ctx.desired:
            return _TpChoice(tp, ctx.desired, room, factor, capped=False)
    if not tps:
        return None
    tp = tps[-1]
    room, factor = _tp_room(mem, ctx.util, fig, reserve, tp), _tp_factor(ctx.cfg, tp)
    length = _length_in(room, fig, ctx.desired, factor)
    if length < ctx.min_len:
        return None
    return _TpChoice(tp, length, room, factor, capped=True)


def _try_vllm(ctx: _Context) -> _Outcome | None:
    gpus = ctx.profile.gpus
    if not gpus:
        if ctx.engine == "vllm":
            ctx.reasons.append("vLLM needs an NVIDIA GPU and the target has none")
        return None
    if ctx.engine not in ("auto", "vllm"):
        return None
    cc = min(g.cc for g in gpus)
    if cc < VLLM_MIN_CC:
        ctx.reasons.append(f"vLLM needs compute capability ≥ {VLLM_MIN_CC}; the GPU has {cc:.1f}")
        return None
    if not _vllm_can_serve(ctx, cc):
        return None
    dt, dt_warn = _gpu_dtype(ctx.dtype, ctx.details.dtype, cc)
    fig, reserve = _figures(ctx, dt), reserve_bytes(ctx.cfg, dt)
    mem = min(g.memory_total for g in gpus)
    tps = _tp_sizes(ctx.cfg, len(gpus))
    choice = _choose_tp(ctx, fig, reserve, mem, tps)
    if choice is None:
        _vllm_failure(ctx, fig, reserve, mem, tps[-1] if tps else 1)
        return None
    return _vllm_outcome(ctx, fig, reserve, mem, cc, choice, dt_warn)


def _vllm_can_serve(ctx: _Context, cc: float) -> bool:
    """Encoders take the Transformers embeddings path; a quantization format needs its kernels' cc."""
    if ctx.task == "embed":
        ctx.reasons.append("encoder model: served by the Transformers embeddings path, not vLLM")
        return False
    method = ctx.cfg.quantization
    need = QUANT_MIN_CC.get(method or "")
    if need is not None and cc < need:
        ctx.reasons.append(f"vLLM: {method} checkpoints need compute capability ≥ {need}; the GPU has {cc:.1f}")
        _add(ctx.failures, PlanWarning(QUANTIZATION_UNSUPPORTED, f"vLLM has no {method} kernels for compute "
                                       f"capability {cc:.1f} (needs ≥ {need}); pick a bf16/fp16 variant or a newer GPU."))
        return False
    if method == "fp8" and cc < FP8_NATIVE_CC:
        ctx.notes.append(f"FP8 weights on compute capability {cc:.1f} < {FP8_NATIVE_CC}: vLLM runs them weight-only "
                         "through its Marlin kernels (W8A16)")
    return True


def _vllm_outcome(ctx: _Context, fig: _Figures, reserve: int, mem: int, cc: float, choice: _TpChoice,
                  dt_warn: PlanWarning | None) -> _Outcome:
    tp, room, factor, kvpt = choice.tp, choice.room, choice.factor, fig.kv_per_token
    k = kvpt * factor
    tokens = _tokens_in(room, fig, ctx.desired, factor)
    reasons = [*ctx.reasons, f"{ctx.profile.summary()}: compute capability {cc:.1f} ≥ {VLLM_MIN_CC} → vLLM"]
    if tp > 1:
        reasons.append(f"one GPU is not enough: tensor parallel {tp} (the smallest power of two that divides "
                       f"{ctx.cfg.num_attention_heads} attention heads and fits)")
    reasons.append(f"weights {gib(fig.weights)} in {fig.dtype}; per GPU {gib(mem)} × {ctx.util:g} − "
                   f"{gib(fig.weights / tp)} weights − {gib(reserve)} reserve leaves {gib(room / tp)} for the KV cache")
    replicated = f" ({k} with the cache replicated over TP {tp})" if k != kvpt else ""
    held = "the full context" if tokens >= NO_LIMIT else f"{tokens} tokens"
    reasons.append(f"KV cache {kvpt} bytes/token{replicated} → room for {held}")
    capped = None
    if choice.capped:
        capped = _capped_warning(
            "the KV cache holds", tokens, ctx.desired, choice.length,
            "For the full context use more GPUs, a shorter --max-model-len, or a quantized variant.",
        )
    if cc < 7.5:
        ctx.notes.append("recent vLLM releases need compute capability ≥ 7.5: check that the vLLM in the "
                         f"engine image still supports this {cc:.1f} GPU")
    return _Outcome(
        "vllm", "cuda", fig, choice.length, _concurrency(room, fig, choice.length, MAX_NUM_SEQS, factor), tp, reasons,
        ctx.warnings(dt_warn, capped), reserve=reserve, kv_room=room, memory=mem,
    )


def _vllm_failure(ctx: _Context, fig: _Figures, reserve: int, mem: int, max_tp: int) -> None:
    n = len(ctx.profile.gpus)
    if fig.weights + reserve * max_tp > mem * ctx.util * max_tp:
        ctx.reasons.append(f"vLLM: weights {gib(fig.weights)} do not fit in {n} × {gib(mem)} × {ctx.util:g}")
        _add(ctx.failures, _weights_exceed(fig, f"{n} × {gib(mem)} × {ctx.util:g}"))
    else:
        ctx.reasons.append(f"vLLM: after the weights the KV cache holds fewer than {ctx.min_len} tokens")


# ------------------------------------------------------------ Transformers


def _try_transformers_gpu(ctx: _Context) -> _Outcome | None:
    gpus = ctx.profile.gpus
    if not gpus or ctx.engine not in ("auto", "transformers"):
        return None
    cc, mem = gpus[0].cc, gpus[0].memory_total
    dt, dt_warn = _gpu_dtype(ctx.dtype, ctx.details.dtype, cc)
    fig, reserve = _figures(ctx, dt), reserve_bytes(ctx.cfg, dt)
    room = int(mem * ctx.util - fig.weights - reserve)
    length = _length_in(room, fig, ctx.desired)
    if length < ctx.min_len:
        if fig.weights > mem * ctx.util:
            ctx.reasons.append(f"Transformers on GPU: weights {gib(fig.weights)} do not fit in one GPU "
                               f"({gib(mem)} × {ctx.util:g})")
            _add(ctx.failures, _weights_exceed(fig, f"{gib(mem)} × {ctx.util:g}"))
        else:
            ctx.reasons.append(f"Transformers on GPU: after the weights fewer than {ctx.min_len} tokens of KV cache fit")
        return None
    reasons = [*ctx.reasons, f"Transformers on GPU 0: weights {gib(fig.weights)} in {dt}; {gib(mem)} × {ctx.util:g} − "
                             f"weights − {gib(reserve)} reserve leaves {gib(room)} for the KV cache"]
    capped = None
    if length < ctx.desired:
        capped = _capped_warning("the KV cache holds", _tokens_in(room, fig, ctx.desired), ctx.desired, length,
                                 "Use a larger GPU or a shorter --max-model-len.")
    return _Outcome(
        "transformers", "cuda", fig, length, _concurrency(room, fig, length, TRANSFORMERS_MAX_CONCURRENCY), 1,
        reasons, ctx.warnings(dt_warn, capped), reserve=reserve, kv_room=room, memory=mem,
    )


def _cpu_dtypes(ctx: _Context) -> list[str]:
    """auto: float32 first (fast on CPUs), then the stored half dtype when float32 does not fit."""
    if ctx.dtype != "auto":
        return [ctx.dtype]
    stored = ctx.details.dtype if ctx.details.dtype in ("bfloat16", "float16", "float32") else "bfloat16"
    return ["float32"] + ([stored] if stored != "float32" else [])


def _best_cpu_option(ctx: _Context, budget: int) -> tuple[_Figures, int, int] | None:
    """(figures, KV room, length) of the first dtype that holds the full context, else the longest one."""
    best = None
    for dt in _cpu_dtypes(ctx):
        fig = _figures(ctx, dt)
        room = budget - fig.weights
        length = _length_in(room, fig, ctx.desired)
        if length >= ctx.desired:
            return fig, room, length
        if length >= ctx.min_len and (best is None or length > best[2]):
            best = (fig, room, length)
    return best


def _try_transformers_cpu(ctx: _Context) -> _Outcome | None:
    if ctx.engine not in ("auto", "transformers"):
        return None
    ram = ctx.profile.ram_total
    if not ram:
        ctx.reasons.append("the target's RAM is unknown (pass --ram GiB)")
        return None
    best = _best_cpu_option(ctx, int(ram * RAM_UTILIZATION - CPU_RESERVE))
    if best is not None:
        return _cpu_outcome(ctx, ram, *best)
    dt = _cpu_dtypes(ctx)[-1]
    wb = weights_bytes(ctx.details, dt)
    ctx.reasons.append(f"Transformers on CPU: weights {gib(wb)} in {dt} plus {ctx.min_len} tokens of KV cache do not "
                       f"fit in RAM {gib(ram)} × {RAM_UTILIZATION:g} − {gib(CPU_RESERVE)}")
    _add(ctx.failures, PlanWarning(
        RAM_INSUFFICIENT,
        f"RAM ({gib(ram)}) is too small for the weights ({gib(wb)} in {dt}) and a {ctx.min_len}-token KV cache. "
        "Use a machine with more RAM, a smaller or quantized model, or a GPU target.",
    ))
    return None


def _cpu_fallback_warning(ctx: _Context) -> PlanWarning | None:
    if ctx.profile.gpus:
        return PlanWarning(
            CPU_FALLBACK,
            "the model does not fit the GPUs, so it runs on CPU with Transformers: expect a few tokens per "
            "second at best. Use more GPUs, a shorter context, or a quantized variant to run on GPU.",
        )
    if (ctx.details.parameters or 0) >= 1_000_000_000:
        return PlanWarning(
            CPU_FALLBACK,
            "no GPU on the target: Transformers on CPU, expect a few tokens per second for a model "
            "of this size. A smaller or quantized model answers faster.",
        )
    return None


def _cpu_outcome(ctx: _Context, ram: int, fig: _Figures, room: int, length: int) -> _Outcome:
    dt = fig.dtype
    reasons = [*ctx.reasons, f"Transformers on CPU: weights {gib(fig.weights)} in {dt}; RAM {gib(ram)} × "
                             f"{RAM_UTILIZATION:g} − {gib(CPU_RESERVE)} runtime − weights leaves {gib(room)} for the KV cache"]
    if dt == "float32" and ctx.details.dtype in ("bfloat16", "float16"):
        reasons.append(f"float32 on CPU: {ctx.details.dtype} matmuls are slow on most CPUs")
    capped = None
    if length < ctx.desired:
        capped = _capped_warning("RAM holds a KV cache of", _tokens_in(room, fig, ctx.desired), ctx.desired, length,
                                 "Add RAM or use a shorter --max-model-len.")
    return _Outcome(
        "transformers", "cpu", fig, length, _concurrency(room, fig, length, TRANSFORMERS_MAX_CONCURRENCY), 1,
        reasons, ctx.warnings(_cpu_fallback_warning(ctx), capped, failures=True),
        reserve=CPU_RESERVE, kv_room=room, memory=ram,
    )


# --------------------------------------------------------------- the decision


def _does_not_fit(ctx: _Context) -> _Outcome:
    fig = _figures(ctx, _auto_gpu_dtype(ctx.dtype, ctx.details.dtype))
    remedies = "a shorter --max-model-len, more GPUs (--gpu-count), a smaller dtype, or a quantized variant (AWQ/GPTQ)"
    if ctx.engine != "auto":
        remedies = f"--engine auto, {remedies}"
    verdict = PlanWarning(
        DOES_NOT_FIT,
        f"{ctx.details.model} does not fit {ctx.profile.summary()} with --engine {ctx.engine}. Try {remedies}.",
    )
    return _Outcome(None, None, fig, ctx.desired, 0, 1, ctx.reasons or ["nothing fits"],
                    ctx.warnings(verdict, failures=True))


CANDIDATES = (_try_vllm, _try_transformers_gpu, _try_transformers_cpu)  # in order of preference


def _decide(ctx: _Context) -> _Outcome:
    for candidate in CANDIDATES:
        outcome = candidate(ctx)
        if outcome is not None:
            return outcome
    return _does_not_fit(ctx)


def _sources(ctx: _Context, fig: _Figures) -> dict[str, str]:
    """Where each figure of the plan came from."""
    ram = ctx.profile.ram_total
    return {
        "parameters": fig.source,
        "weights": fig.source,
        "kv_cache": "none (encoder)" if ctx.task == "embed" else "vllm-kv-cache-spec",
        "context": "config.json" if ctx.cfg.max_position_embeddings else "assumed 2048",
        "target": "target profile" if ram or ctx.profile.gpus else "unknown",
        "ram": "target profile" if ram else "unknown (pass --ram GiB)",
    }


def _build_plan(ctx: _Context, out: _Outcome) -> Plan:
    """The one place a :class:`Plan` is made."""
    d, fig = ctx.details, out.figures
    return Plan(
        model=d.model, engine=out.engine, device=out.device, fits=out.engine is not None, dtype=out.figures.dtype,
        weights_bytes=out.figures.weights, kv_bytes_per_token=out.figures.kv_per_token,
        max_model_len=out.max_model_len, max_concurrent_sequences=out.concurrency,
        tensor_parallel_size=out.tensor_parallel_size, gpu_memory_utilization=ctx.util,
        reasons=out.reasons, warnings=out.warnings, model_max_model_len=ctx.model_len,
        reserve_bytes=out.reserve, kv_cache_bytes=out.kv_room, memory_bytes=out.memory,
        trust_remote_code=d.trust_remote_code, parameters=fig.parameters, weight_format=d.weight_format,
        revision=d.revision, source=d.source, target=ctx.profile.summary(), notes=ctx.notes, task=ctx.task,
        quantization=ctx.cfg.quantization, kv_cache_dtype=ctx.kv_cache_dtype,
        kv_bytes_per_sequence_bounded=fig.kv.fixed(out.max_model_len), sources=_sources(ctx, fig),
    )


def make_plan(
    model: Any,
    profile: HardwareProfile,
    options: PlanOptions | None = None,
    *,
    max_model_len: int | None = None,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.9,
    engine: str = "auto",
    revision: str | None = None,
) -> Plan:
    """Plan ``model`` (a :class:`discovery.ModelDetails`, a local folder or a hub id)
    on ``profile``, with ``options`` or the same choices as keywords. Bad arguments
    raise :class:`UsageError` naming the flag."""
    keywords = PlanOptions(max_model_len, dtype, gpu_memory_utilization, engine, revision, "auto")
    if options is None:
        options = keywords
    elif keywords != PlanOptions():
        raise TypeError("make_plan: pass the choices either as PlanOptions or as keywords, not both")
    details = _details_of(model, options.revision)
    ctx = _context(details, profile, options)
    return _build_plan(ctx, _decide(ctx))


# ------------------------------------------------------------------- rendering

def plan_rows(plan: Plan) -> list[tuple[str, str]]:
    """The plan as (label, value) rows: what the CLI table and the TUI review screen show."""
    engine = plan.engine or "none"
    if plan.engine == "vllm" and plan.tensor_parallel_size > 1:
        engine += f" (tensor parallel {plan.tensor_parallel_size})"
    ctx = str(plan.max_model_len)
    if plan.model_max_model_len and plan.max_model_len != plan.model_max_model_len:
        ctx += f" (model: {plan.model_max_model_len})"
    rows = [
        ("model", plan.model),
        ("target", plan.target),
        ("fits", "yes" if plan.fits else "NO"),
        ("engine", engine),
        ("device", plan.device or "-"),
        ("dtype", plan.dtype),
        ("weights", f"{human_bytes(plan.weights_bytes)}  [{plan.sources.get('weights', '?')}]"),
        ("KV cache / token", f"{plan.kv_bytes_per_token:,} B  [{plan.sources.get('kv_cache', '?')}]"),
        ("max model len", ctx),
        ("concurrent sequences", str(plan.max_concurrent_sequences)),
    ]
    if plan.device == "cuda":
        rows.append(("GPU memory utilization", f"{plan.gpu_memory_utilization:g}"))
    if plan.kv_cache_bytes:
        rows.append(("KV cache room", human_bytes(plan.kv_cache_bytes)))
    if plan.kv_bytes_per_sequence_bounded:
        rows.append(("KV bounded / sequence", f"{plan.kv_bytes_per_sequence_bounded:,} B (sliding-window, chunked, state)"))
    if plan.parameters:
        rows.append(("parameters", f"{plan.parameters:,}  [{plan.sources.get('parameters', '?')}]"))
    if plan.quantization:
        rows.append(("quantization", plan.quantization))
    if plan.task == "embed":
        rows.append(("task", "embeddings (encoder, no KV cache)"))
    rows.append(("RAM", plan.sources.get("ram", "?")))
    return rows


def plan_sections(plan: Plan) -> list[tuple[str, list[str]]]:
    """The reasons, notes and warnings as (heading, lines), empty ones left out: what the
    CLI text, the rich rendering and the TUI show under the table."""
    sections = [
        ("why:", [f"  - {r}" for r in plan.reasons]),
        ("notes:", [f"  - {n}" for n in plan.notes]),
        ("warnings:", [f"  ! {w.code}: {w.message}" for w in plan.warnings]),
    ]
    return [(heading, lines) for heading, lines in sections if lines]


def format_plan_text(plan: Plan) -> str:
    """Plain text: the table, then reasons, notes and warnings."""
    rows = plan_rows(plan)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    for heading, section in plan_sections(plan):
        if heading == "why:":
            lines.append("")
        lines.append(heading)
        lines.extend(section)
    return "\n".join(lines)
