"""The memory/engine plan: which engine, on which device, in which dtype, with how
much context and concurrency, on how many GPUs, and why.

Memory model (all sizes in bytes):

* **Weights** come from the safetensors headers when the files are at hand,
  otherwise from hub metadata (per-dtype parameter counts), otherwise from an
  exact parameter count of ``config.json`` (:func:`modelinfo.count_parameters`);
  floating tensors are counted at the planned dtype, quantized ones as stored.
* **KV cache per token** = ``2 × num_hidden_layers × num_key_value_heads ×
  head_dim × dtype_bytes`` (vLLM's own formula; an upper bound for MLA,
  sliding-window and hybrid models, which get a note).
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

from ezrunner.core import modelinfo
from ezrunner.core.errors import UsageError
from ezrunner.core.hardware import GiB, HardwareProfile
from ezrunner.core.units import human_bytes

# ---------------------------------------------------------------- tunables (documented)
RUNTIME_RESERVE = 1 * GiB  # per GPU: CUDA context, workspaces, CUDA graphs
MAX_NUM_BATCHED_TOKENS = 2048  # vLLM default for the OpenAI server
MAX_NUM_SEQS = 256  # vLLM default concurrency cap
TRANSFORMERS_MAX_CONCURRENCY = 32  # the embedded server's own default (--max-concurrency): one continuous batch
MIN_CONTEXT = 2048  # below this a capped context is not worth serving
VLLM_MIN_CC = 7.0
BF16_MIN_CC = 8.0
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
WARNING_CODES = (
    WEIGHTS_EXCEED_GPU_MEMORY,
    KV_CACHE_LIMITS_CONTEXT,
    BF16_UNSUPPORTED,
    CPU_FALLBACK,
    RAM_INSUFFICIENT,
    REMOTE_CODE_REQUIRED,
    NOT_SAFETENSORS,
    DOES_NOT_FIT,
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


def weights_bytes(details: Any, dtype: str) -> int:
    """Weights at ``dtype``: safetensors headers / hub metadata per dtype, else the
    config parameter count, else the weight files' size."""
    if details.parameters_by_dtype:
        return modelinfo.bytes_at_dtype(details.parameters_by_dtype, dtype)
    if details.parameters:
        return int(details.parameters * _dtype_bytes(dtype))
    total = details.weights_total_bytes
    if total:
        stored = details.dtype if details.dtype in modelinfo.DTYPE_BYTES else "bfloat16"
        return int(total * _dtype_bytes(dtype) / modelinfo.DTYPE_BYTES[stored])
    raise UsageError(f"{details.model}: cannot size the weights (no safetensors, no parameter count, no file sizes)")


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


def _gpu_dtype(requested: str, model_dtype: str | None, cc: float) -> tuple[str, PlanWarning | None]:
    # auto: keep a bf16/fp16 model's dtype; serve fp32 (or unknown) models in bf16
    want = requested if requested != "auto" else (model_dtype if model_dtype in ("bfloat16", "float16") else "bfloat16")
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


def make_plan(
    model: Any,
    profile: HardwareProfile,
    *,
    max_model_len: int | None = None,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.9,
    engine: str = "auto",
    revision: str | None = None,
) -> Plan:
    """Plan ``model`` (a :class:`discovery.ModelDetails`, a local folder or a hub id)
    on ``profile``. Bad arguments raise :class:`UsageError` naming the flag."""
    from ezrunner.core import discovery

    if isinstance(model, discovery.ModelDetails):
        details = model
    elif isinstance(model, (str, os.PathLike, Path)):
        details = discovery.model_details(model, revision)
    else:
        raise TypeError(f"make_plan: model must be ModelDetails, a path or an id, not {type(model).__name__}")
    if dtype not in DTYPES:
        raise UsageError(f"--dtype: unknown dtype {dtype!r}", hint=f"choose one of: {', '.join(DTYPES)}")
    if engine not in ENGINES:
        raise UsageError(f"--engine: unknown engine {engine!r}", hint=f"choose one of: {', '.join(ENGINES)}")
    try:
        util = float(gpu_memory_utilization)
    except (TypeError, ValueError):
        raise UsageError(f"--gpu-memory-utilization: not a number: {gpu_memory_utilization!r}") from None
    if not 0.05 <= util <= 1.0:
        raise UsageError(f"--gpu-memory-utilization: must be between 0.05 and 1.0, got {gpu_memory_utilization!r}")
    cfg = details.config
    if cfg is None:
        why = "; ".join(details.notes) or "no config.json"
        raise UsageError(f"{details.model}: cannot plan without config.json ({why})")

    model_len = cfg.max_position_embeddings
    notes: list[str] = list(modelinfo.attention_notes(cfg, 2))
    if model_len is None:
        model_len = 2048
        notes.append("config.json names no context length; assuming 2048")
    if max_model_len is not None:
        if isinstance(max_model_len, bool) or not isinstance(max_model_len, int) or max_model_len < 16:
            raise UsageError(f"--max-model-len: must be an integer of at least 16, got {max_model_len!r}")
        if max_model_len > model_len:
            raise UsageError(
                f"--max-model-len: {max_model_len} is longer than the model's context ({model_len})",
                hint=f"use at most {model_len}",
            )
    desired = max_model_len or model_len
    min_len = min(MIN_CONTEXT, desired)

    base = {
        "model": details.model,
        "gpu_memory_utilization": util,
        "model_max_model_len": model_len,
        "trust_remote_code": details.trust_remote_code,
        "parameters": details.parameters,
        "weight_format": details.weight_format,
        "revision": details.revision,
        "source": details.source,
        "target": profile.summary(),
        "notes": notes,
    }
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

    reasons: list[str] = []
    failures: list[PlanWarning] = []
    gpus = profile.gpus
    for g in gpus:
        if g.memory_free is not None and g.memory_free < g.memory_total * util:
            notes.append(
                f"GPU {g.index} had only {human_bytes(g.memory_free)} free when probed; vLLM needs "
                f"{human_bytes(g.memory_total * util)} ({util:g} of it) free when it starts"
            )

    # ---------------------------------------------------------------- vLLM
    if gpus and engine in ("auto", "vllm"):
        cc = min(g.cc for g in gpus)
        mem = min(g.memory_total for g in gpus)
        if cc < VLLM_MIN_CC:
            reasons.append(f"vLLM needs compute capability ≥ {VLLM_MIN_CC}; the GPU has {cc:.1f}")
        else:
            dt, dt_warn = _gpu_dtype(dtype, details.dtype, cc)
            wb = weights_bytes(details, dt)
            kvpt = modelinfo.kv_bytes_per_token(cfg, _dtype_bytes(dt))
            res = reserve_bytes(cfg, dt)
            tps = [tp for tp in (1, 2, 4, 8, 16, 32, 64) if tp <= len(gpus) and cfg.num_attention_heads % tp == 0]
            chosen: tuple[int, int, int] | None = None  # tp, length, kv room
            def per_token(tp: int) -> int:
                # vLLM replicates KV heads when TP exceeds them: each GPU keeps at least one.
                nkv = cfg.num_key_value_heads
                return kvpt * -(-tp // nkv) if tp > nkv else kvpt

            for tp in tps:
                room = int((mem * util - wb / tp - res) * tp)
                if room > 0 and room // per_token(tp) >= desired:
                    chosen = (tp, desired, room)
                    break
            capped = False
            if chosen is None and tps:
                tp = tps[-1]
                room = int((mem * util - wb / tp - res) * tp)
                length = _round_len(room // per_token(tp)) if room > 0 else 0
                if length >= min_len:
                    chosen, capped = (tp, min(length, desired), room), True
            if chosen is not None:
                tp, length, room = chosen
                k = per_token(tp)
                warnings = list(common)
                _add(warnings, dt_warn)
                rs = [f"{profile.summary()}: compute capability {cc:.1f} ≥ {VLLM_MIN_CC} → vLLM"]
                if tp > 1:
                    rs.append(f"one GPU is not enough: tensor parallel {tp} (the smallest power of two that divides "
                              f"{cfg.num_attention_heads} attention heads and fits)")
                rs.append(f"weights {gib(wb)} in {dt}; per GPU {gib(mem)} × {util:g} − {gib(wb / tp)} weights − "
                          f"{gib(res)} reserve leaves {gib(room / tp)} for the KV cache")
                rs.append(f"KV cache {kvpt} bytes/token" + (f" ({k} with KV heads replicated over TP {tp})" if k != kvpt else "") + f" → room for {room // k} tokens")
                if capped:
                    _add(warnings, PlanWarning(
                        KV_CACHE_LIMITS_CONTEXT,
                        f"the KV cache holds {room // k} tokens, less than the context of {desired}: max_model_len "
                        f"set to {length}. For the full context use more GPUs, a shorter --max-model-len, or a "
                        "quantized variant.",
                    ))
                conc = max(1, min(MAX_NUM_SEQS, room // (k * length)))
                if cc < 7.5:
                    notes.append("recent vLLM releases need compute capability ≥ 7.5: check that the vLLM in the "
                                 f"engine image still supports this {cc:.1f} GPU")
                return Plan(
                    engine="vllm", device="cuda", fits=True, dtype=dt, weights_bytes=wb, kv_bytes_per_token=kvpt,
                    max_model_len=length, max_concurrent_sequences=int(conc), tensor_parallel_size=tp,
                    reasons=rs, warnings=warnings, reserve_bytes=res, kv_cache_bytes=room, memory_bytes=mem, **base,
                )
            total_budget = mem * util * (tps[-1] if tps else 1)
            if wb + res * (tps[-1] if tps else 1) > total_budget:
                reasons.append(f"vLLM: weights {gib(wb)} do not fit in {len(gpus)} × {gib(mem)} × {util:g}")
                _add(failures, PlanWarning(
                    WEIGHTS_EXCEED_GPU_MEMORY,
                    f"the weights ({gib(wb)} in {dt}) exceed the usable GPU memory ({len(gpus)} × {gib(mem)} × {util:g}). "
                    "Use more or larger GPUs (--gpu-count), a quantized variant (AWQ/GPTQ/FP8), or a smaller model.",
                ))
            else:
                reasons.append(f"vLLM: after the weights the KV cache holds fewer than {min_len} tokens")

    # ------------------------------------------------------- Transformers on GPU
    if gpus and engine in ("auto", "transformers"):
        cc = gpus[0].cc
        mem = gpus[0].memory_total
        dt, dt_warn = _gpu_dtype(dtype, details.dtype, cc)
        wb = weights_bytes(details, dt)
        kvpt = modelinfo.kv_bytes_per_token(cfg, _dtype_bytes(dt))
        res = reserve_bytes(cfg, dt)
        room = int(mem * util - wb - res)
        length = min(desired, _round_len(room // kvpt)) if room > 0 else 0
        if length >= min_len:
            warnings = list(common)
            _add(warnings, dt_warn)
            rs = list(reasons)
            rs.append(f"Transformers on GPU 0: weights {gib(wb)} in {dt}; {gib(mem)} × {util:g} − weights − "
                      f"{gib(res)} reserve leaves {gib(room)} for the KV cache")
            if length < desired:
                _add(warnings, PlanWarning(
                    KV_CACHE_LIMITS_CONTEXT,
                    f"the KV cache holds {room // kvpt} tokens, less than the context of {desired}: max_model_len "
                    f"set to {length}. Use a larger GPU or a shorter --max-model-len.",
                ))
            conc = max(1, min(TRANSFORMERS_MAX_CONCURRENCY, room // (kvpt * length)))
            return Plan(
                engine="transformers", device="cuda", fits=True, dtype=dt, weights_bytes=wb, kv_bytes_per_token=kvpt,
                max_model_len=length, max_concurrent_sequences=int(conc), tensor_parallel_size=1,
                reasons=rs, warnings=warnings, reserve_bytes=res, kv_cache_bytes=room, memory_bytes=mem, **base,
            )
        if wb > mem * util:
            reasons.append(f"Transformers on GPU: weights {gib(wb)} do not fit in one GPU ({gib(mem)} × {util:g})")
            _add(failures, PlanWarning(
                WEIGHTS_EXCEED_GPU_MEMORY,
                f"the weights ({gib(wb)} in {dt}) exceed the usable GPU memory ({gib(mem)} × {util:g}). "
                "Use more or larger GPUs (--gpu-count), a quantized variant (AWQ/GPTQ/FP8), or a smaller model.",
            ))
        else:
            reasons.append(f"Transformers on GPU: after the weights fewer than {min_len} tokens of KV cache fit")

    # ------------------------------------------------------- Transformers on CPU
    if engine == "vllm" and not gpus:
        reasons.append("vLLM needs an NVIDIA GPU and the target has none")
    if engine in ("auto", "transformers"):
        ram = profile.ram_total
        if not ram:
            reasons.append("the target's RAM is unknown (pass --ram GiB)")
        else:
            budget = int(ram * RAM_UTILIZATION - CPU_RESERVE)
            if dtype == "auto":
                stored = details.dtype if details.dtype in ("bfloat16", "float16", "float32") else "bfloat16"
                candidates = ["float32"] + ([stored] if stored != "float32" else [])
            else:
                candidates = [dtype]
            best = None
            for dt in candidates:
                wb = weights_bytes(details, dt)
                kvpt = modelinfo.kv_bytes_per_token(cfg, _dtype_bytes(dt))
                room = budget - wb
                length = min(desired, _round_len(room // kvpt)) if room > 0 else 0
                option = (dt, wb, kvpt, room, length)
                if length >= desired:
                    best = option
                    break
                if length >= min_len and (best is None or length > best[4]):
                    best = option
            if best is not None:
                dt, wb, kvpt, room, length = best
                warnings = list(common)
                for f in failures:
                    _add(warnings, f)
                rs = list(reasons)
                rs.append(f"Transformers on CPU: weights {gib(wb)} in {dt}; RAM {gib(ram)} × {RAM_UTILIZATION:g} − "
                          f"{gib(CPU_RESERVE)} runtime − weights leaves {gib(room)} for the KV cache")
                if dt == "float32" and details.dtype in ("bfloat16", "float16"):
                    rs.append(f"float32 on CPU: {details.dtype} matmuls are slow on most CPUs")
                if gpus:
                    _add(warnings, PlanWarning(
                        CPU_FALLBACK,
                        "the model does not fit the GPUs, so it runs on CPU with Transformers: expect a few tokens per "
                        "second at best. Use more GPUs, a shorter context, or a quantized variant to run on GPU.",
                    ))
                elif (details.parameters or 0) >= 1_000_000_000:
                    _add(warnings, PlanWarning(
                        CPU_FALLBACK,
                        "no GPU on the target: Transformers on CPU, expect a few tokens per second for a model "
                        "of this size. A smaller or quantized model answers faster.",
                    ))
                if length < desired:
                    _add(warnings, PlanWarning(
                        KV_CACHE_LIMITS_CONTEXT,
                        f"RAM holds a KV cache of {room // kvpt} tokens, less than the context of {desired}: "
                        f"max_model_len set to {length}. Add RAM or use a shorter --max-model-len.",
                    ))
                conc = max(1, min(TRANSFORMERS_MAX_CONCURRENCY, room // (kvpt * length)))
                return Plan(
                    engine="transformers", device="cpu", fits=True, dtype=dt, weights_bytes=wb,
                    kv_bytes_per_token=kvpt, max_model_len=length, max_concurrent_sequences=int(conc),
                    tensor_parallel_size=1, gpu_memory_utilization=util, reasons=rs, warnings=warnings,
                    reserve_bytes=CPU_RESERVE, kv_cache_bytes=room, memory_bytes=ram,
                    **{k: v for k, v in base.items() if k != "gpu_memory_utilization"},
                )
            dt = candidates[-1]
            wb = weights_bytes(details, dt)
            reasons.append(f"Transformers on CPU: weights {gib(wb)} in {dt} plus {min_len} tokens of KV cache do not "
                           f"fit in RAM {gib(ram)} × {RAM_UTILIZATION:g} − {gib(CPU_RESERVE)}")
            _add(failures, PlanWarning(
                RAM_INSUFFICIENT,
                f"RAM ({gib(ram)}) is too small for the weights ({gib(wb)} in {dt}) and a {min_len}-token KV cache. "
                "Use a machine with more RAM, a smaller or quantized model, or a GPU target.",
            ))

    # --------------------------------------------------------------- no fit
    if dtype != "auto":
        dt = dtype
    else:
        dt = details.dtype if details.dtype in ("bfloat16", "float16") else "bfloat16"
    wb = weights_bytes(details, dt)
    kvpt = modelinfo.kv_bytes_per_token(cfg, _dtype_bytes(dt))
    warnings = list(common)
    for f in failures:
        _add(warnings, f)
    remedies = "a shorter --max-model-len, more GPUs (--gpu-count), a smaller dtype, or a quantized variant (AWQ/GPTQ)"
    if engine != "auto":
        remedies = f"--engine auto, {remedies}"
    _add(warnings, PlanWarning(DOES_NOT_FIT, f"{details.model} does not fit {profile.summary()} with --engine {engine}. Try {remedies}."))
    return Plan(
        engine=None, device=None, fits=False, dtype=dt, weights_bytes=wb, kv_bytes_per_token=kvpt,
        max_model_len=desired, max_concurrent_sequences=0, tensor_parallel_size=1,
        reasons=reasons or ["nothing fits"], warnings=warnings, **base,
    )


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
        ("weights", human_bytes(plan.weights_bytes)),
        ("KV cache / token", f"{plan.kv_bytes_per_token:,} B"),
        ("max model len", ctx),
        ("concurrent sequences", str(plan.max_concurrent_sequences)),
    ]
    if plan.device == "cuda":
        rows.append(("GPU memory utilization", f"{plan.gpu_memory_utilization:g}"))
    if plan.kv_cache_bytes:
        rows.append(("KV cache room", human_bytes(plan.kv_cache_bytes)))
    if plan.parameters:
        rows.append(("parameters", f"{plan.parameters:,}"))
    return rows


def format_plan_text(plan: Plan) -> str:
    """Plain text: the table, then reasons, notes and warnings."""
    rows = plan_rows(plan)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if plan.reasons:
        lines.append("")
        lines.append("why:")
        lines.extend(f"  - {r}" for r in plan.reasons)
    if plan.notes:
        lines.append("notes:")
        lines.extend(f"  - {n}" for n in plan.notes)
    if plan.warnings:
        lines.append("warnings:")
        lines.extend(f"  ! {w.code}: {w.message}" for w in plan.warnings)
    return "\n".join(lines)
