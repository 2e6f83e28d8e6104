"""Model loading and the two engines: generation (continuous batching) and embeddings.

torch and transformers are imported inside functions only, so importing this
module stays cheap and pulls in no hub client.

Generation uses the continuous-batching manager that transformers ships
(``model.init_continuous_batching()``): every request is handed to it with
``add_request`` and its tokens come back through ``register_result_handler``
on the event loop. The manager's scheduler decides which sequences share each
forward pass; this module only counts them (a forward pre-hook on the model)
for the ``ezrunner_batch_sequences`` metric.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import LoadError, ServerConfig

if TYPE_CHECKING:
    from .metrics import ServerMetrics
    from .sampling import FastSampler

log = logging.getLogger("ezrunner_server")

GENERATE = "generate"
EMBED = "embed"

# Greedy decoding inside a sampling batch: a temperature this low turns the
# softmax into a one-hot vector, so multinomial sampling returns the argmax.
GREEDY_TEMPERATURE = 1e-5

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


class EngineFailure(Exception):
    """A request failed inside the engine (answered as 500)."""


# --------------------------------------------------------------------------------------------- capability


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LoadError(f"cannot read {path}: {exc}") from exc


def declared_capability(model_dir: Path) -> str:
    """What the model is served for, decided once at load time from its files:
    a ``*ForCausalLM`` / ``*LMHeadModel`` architecture generates; a
    sentence-transformers folder (modules.json) or an encoder architecture embeds."""
    cfg = read_json(model_dir / "config.json")
    archs = cfg.get("architectures") or []
    if any(str(a).endswith(_CAUSAL_SUFFIXES) for a in archs):
        return GENERATE
    if (model_dir / "modules.json").is_file() or (model_dir / "sentence_bert_config.json").is_file():
        return EMBED
    if any(str(a).endswith(("Model", "ForMaskedLM")) for a in archs):
        return EMBED
    raise LoadError(
        f"cannot tell how to serve {model_dir}: config.json lists architectures {archs or 'none'}; "
        "expected a causal language model (*ForCausalLM) or an embedding/encoder model"
    )


def _needs_remote_code(cfg: dict) -> bool:
    if "auto_map" not in cfg:
        return False
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return cfg.get("model_type") not in CONFIG_MAPPING_NAMES


def check_remote_code(model_dir: Path, cfg: dict, trusted: bool) -> None:
    """Refuse a model that ships its own Python code unless --trust-remote-code was given."""
    if not trusted and _needs_remote_code(cfg):
        raise LoadError(
            f"the model in {model_dir} needs its own Python code (config.json has auto_map for model_type "
            f"{cfg.get('model_type')!r}); start the server with --trust-remote-code if you trust that code"
        )


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LoadError("--device cuda was given but torch sees no CUDA device")
    return device


def cpu_supports(dtype_name: str) -> bool:
    """Whether this CPU has native instructions for the half-precision type (AVX512-BF16 /
    AMX for bfloat16, AVX512-FP16 / AMX-FP16 for float16), as oneDNN reports them."""
    import torch

    probe = {"bfloat16": "_is_mkldnn_bf16_supported", "float16": "_is_mkldnn_fp16_supported"}.get(dtype_name)
    try:
        return bool(probe and getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str, device: str, weights_dtype: str | None):
    """``auto`` keeps the weights' dtype on GPU. On CPU it keeps bf16/fp16 weights only where
    the CPU computes that type natively (measured: with AVX512-BF16, bf16 batches run 1.4-1.8x
    faster than float32); elsewhere half-precision matmuls are emulated and several times
    slower, so it computes in float32."""
    import torch

    if dtype not in _DTYPES:
        raise LoadError(f"unknown --dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    if dtype != "auto":
        return getattr(torch, dtype)
    name = weights_dtype if weights_dtype in ("float32", "bfloat16", "float16") else None
    if device == "cpu":
        if name in ("bfloat16", "float16") and cpu_supports(name):
            return getattr(torch, name)
        return torch.float32
    return getattr(torch, name) if name else torch.float16


# --------------------------------------------------------------------------------------------- generation


@dataclass
class GenerationParams:
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass
class Delta:
    text: str
    finished: bool = False
    finish_reason: str | None = None
    completion_tokens: int = 0


class _IncrementalDecoder:
    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self._rust = getattr(tokenizer, "_tokenizer", None)
        self._stream = None
        if self._rust is not None:  # a fast tokenizer: decode token by token in Rust
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(skip_special_tokens=True)
        self._ids: list[int] = []
        self._text = ""

    def step(self, token_id: int) -> str:
        if self._stream is not None:
            piece = self._stream.step(self._rust, token_id)
            return piece or ""
        self._ids.append(token_id)
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece, self._text = text[len(self._text) :], text
        return piece


class GenerationRequest:
    """One request inside the continuous-batching manager, read as text deltas."""

    def __init__(self, engine: GenerationEngine, request_id: str, params: GenerationParams):
        self.engine = engine
        self.request_id = request_id
        self.params = params
        self.first_token_at: float | None = None
        self.completion_tokens = 0
        self.finished = False
        self._queue: asyncio.Queue = asyncio.Queue()
        self._decoder = _IncrementalDecoder(engine.tokenizer)
        self._seen = 0
        self._text = ""
        self._emitted = 0
        self._hold = max((len(s) for s in params.stop), default=1) - 1

    # called on the event loop by the manager's output router
    def _on_output(self, output) -> None:
        self._queue.put_nowait(output)

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self.engine.cancel(self.request_id)

    async def deltas(self) -> AsyncIterator[Delta]:
        try:
            while True:
                output = await self._queue.get()
                while not self._queue.empty():  # outputs are cumulative: keep the latest
                    output = self._queue.get_nowait()
                if output.error is not None:
                    self.finished = True
                    raise EngineFailure(output.error)
                tokens = output.generated_tokens
                new = tokens[self._seen :]
                self._seen = len(tokens)
                first = False
                if new and self.first_token_at is None:
                    stamps = getattr(output, "timestamps", None)
                    self.first_token_at = stamps[0] if stamps else time.perf_counter()
                    first = True
                for tid in new:
                    self._text += self._decoder.step(int(tid))
                self.completion_tokens = len(tokens)
                # stop strings
                if self.params.stop:
                    cut = min((i for i in (self._text.find(s) for s in self.params.stop) if i >= 0), default=-1)
                    if cut >= 0:
                        piece = self._text[self._emitted : cut]
                        self._emitted = cut
                        self.cancel()
                        yield Delta(piece, True, "stop", self.completion_tokens)
                        return
                if output.is_finished():
                    self.finished = True
                    piece = self._text[self._emitted :]
                    self._emitted = len(self._text)
                    last = int(tokens[-1]) if tokens else None
                    eos = last is not None and last in self.engine.eos_ids and not self.params.ignore_eos
                    reason = "stop" if eos or len(tokens) < self.params.max_new_tokens else "length"
                    yield Delta(piece, True, reason, self.completion_tokens)
                    return
                safe = len(self._text) - self._hold
                if safe > self._emitted or first:
                    piece = self._text[self._emitted : max(safe, self._emitted)]
                    self._emitted = max(safe, self._emitted)
                    yield Delta(piece, False, None, self.completion_tokens)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """The consumer went away (client disconnect, task cancelled): stop generating.
        Idempotent; a finished request is left alone."""
        if not self.finished:
            self.cancel()
            self.engine.metrics.cancelled.inc()
            log.info("request %s cancelled after %d tokens", self.request_id, self.completion_tokens)


def longest_token_chars(tokenizer) -> int:
    """The most characters one token of ``tokenizer`` can stand for: the longest vocabulary
    entry. Entries are at least as long as the text they decode to (byte-level BPE spells one
    byte per character, SentencePiece one space as '▁', byte fallback '<0x41>' for one byte)."""
    try:
        return max(1, max((len(t) for t in tokenizer.get_vocab()), default=1))
    except Exception:  # noqa: BLE001 - a tokenizer without a vocabulary: no bound before tokenizing
        log.warning("the tokenizer lists no vocabulary: prompts are bounded by bytes only before tokenizing")
        return 1 << 30


class GenerationEngine:
    capability = GENERATE

    def __init__(self, model, tokenizer, *, device: str, max_model_len: int, max_concurrency: int,
                 metrics: ServerMetrics, fault_prompt: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_model_len = max_model_len
        self.max_concurrency = max_concurrency
        self.metrics = metrics
        self.fault_prompt = fault_prompt
        self.manager = None
        gc = getattr(model, "generation_config", None)
        eos: list[int] = []
        for src in (getattr(gc, "eos_token_id", None), getattr(model.config, "eos_token_id", None),
                    getattr(tokenizer, "eos_token_id", None)):
            if isinstance(src, int):
                eos.append(src)
            elif isinstance(src, (list, tuple)):
                eos.extend(int(x) for x in src)
        self.eos_ids = sorted(set(eos))
        self.max_token_chars = longest_token_chars(tokenizer)
        sample = bool(getattr(gc, "do_sample", False))
        t = getattr(gc, "temperature", None)
        p = getattr(gc, "top_p", None)
        self.default_temperature = float(t) if sample and t is not None else (1.0 if sample else 0.0)
        self.default_top_p = float(p) if sample and p is not None else 1.0
        self._hook = None
        # the sorting-free sampler (sampling.py) when it samples for the manager; None or
        # inactive while transformers samples (then seeds reseed the shared generator and
        # penalties are refused)
        self.sampler: FastSampler | None = None

    # -- lifecycle
    def start(self) -> None:
        import torch
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        page = 256 if self.max_model_len >= 1024 else 64
        num_blocks, chunk = self._cache_plan(page)
        cb_config = ContinuousBatchingConfig(
            page_size=page,
            num_blocks=num_blocks,
            max_batch_tokens=chunk,
            max_requests_per_batch=self.max_concurrency,
            per_request_processors=True,  # temperature and top_p per request
            allow_block_sharing=True,
            max_queue_size=0,
        )
        # Non-default temperature/top_p here make transformers build the per-request
        # processors; each request then passes its own values.
        gen_config = GenerationConfig(
            do_sample=True,
            temperature=0.5,
            top_p=0.99,
            top_k=None,
            max_new_tokens=self.max_model_len,
            eos_token_id=self.eos_ids or -1,
            pad_token_id=getattr(self.tokenizer, "pad_token_id", None) or (self.eos_ids[0] if self.eos_ids else 0),
        )
        from .fuse import fuse_projections
        from .sampling import install_fast_sampler

        fuse_projections(self.model)
        self._hook = self.model.register_forward_pre_hook(self._count_batch, with_kwargs=True)
        with torch.inference_mode():
            self.manager = self.model.init_continuous_batching(
                generation_config=gen_config, continuous_batching_config=cb_config
            )
            if self.device == "cpu":  # on GPU the manager's own sampling is cheap and graph-capturable
                self.sampler = install_fast_sampler(self.manager)
            self.manager.warmup()
            self.manager.start()
        self._warm_up()

    def _cache_plan(self, page: int) -> tuple[int | None, int]:
        """(KV-cache blocks, tokens per forward pass). Aim: room for ``max_concurrency``
        full-length sequences and prefill chunks of up to 2048 tokens. On GPU transformers
        sizes the cache from free device memory (``None``). On CPU the cache and the
        attention mask transformers preallocates for sdpa (tokens x (cache + tokens)) must
        fit in a quarter of the available RAM: the chunk shrinks first, then the cache."""
        one_seq = math.ceil(self.max_model_len / page)
        wanted = one_seq * self.max_concurrency + 1
        chunk = max(64, min(self.max_model_len, 2048 if self.device == "cpu" else 4096))
        if self.device != "cpu":
            return None, chunk
        cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        layers = int(getattr(cfg, "num_hidden_layers", 1) or 1)
        heads = int(getattr(cfg, "num_attention_heads", 1) or 1)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or (int(getattr(cfg, "hidden_size", 64)) // heads))
        item = self.model.dtype.itemsize if hasattr(self.model.dtype, "itemsize") else 4
        kv_per_token = 2 * layers * kv_heads * head_dim * item
        budget = _available_ram() // 4

        def total(m: int, n_tokens: int) -> int:
            return n_tokens * kv_per_token + m * (n_tokens + m) * item

        tokens = wanted * page
        while total(chunk, tokens) > budget and chunk > 256:
            chunk //= 2
        if total(chunk, tokens) > budget:
            fit = (budget - chunk * chunk * item) // (kv_per_token + chunk * item)
            blocks = max(2, int(fit) // page)
            log.warning("KV cache capped at %d blocks of %d tokens (a quarter of the free RAM); fewer than %d "
                        "full-length sequences fit at once", blocks, page, self.max_concurrency)
            capacity = (blocks - 1) * page
            if capacity < self.max_model_len:
                # a request longer than the whole cache could never be scheduled: refuse it with a 400
                log.warning("context limited to %d tokens (was %d) so that one sequence fits in the cache; "
                            "set --max-model-len to choose", capacity, self.max_model_len)
                self.max_model_len = capacity
            return blocks, chunk
        return wanted, chunk

    def _warm_up(self) -> None:
        """Run two short generations so the first client request pays no lazy set-up."""
        ids = self.tokenizer("Hello, warm-up.", add_special_tokens=True)["input_ids"][:16] or [0]
        for n, rid in ((4, "warmup-0"), (8, "warmup-1")):
            self.manager.add_request(ids, request_id=rid, max_new_tokens=n, streaming=False,
                                     eos_token_id=-1, temperature=1.0, top_p=1.0)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                out = self.manager.get_result(request_id=rid, timeout=0.5)
                if out is not None and out.is_finished():
                    if out.error:
                        raise LoadError(f"warm-up generation failed: {out.error}")
                    break
                if not self.manager.is_running():
                    raise LoadError("the generation loop stopped during warm-up")
            else:
                raise LoadError("warm-up generation did not finish in 600 s")

    def stop(self) -> None:
        if self.manager is not None:
            try:
                self.manager.stop(block=True, timeout=5)
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.exception("stopping the generation loop failed")
            self.manager = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _count_batch(self, module, args, kwargs) -> None:
        cu = kwargs.get("cu_seq_lens_q")
        ids = kwargs.get("input_ids", args[0] if args else None)
        tokens = int(ids.shape[-1]) if ids is not None and hasattr(ids, "shape") else 0
        seqs = int(cu.numel()) - 1 if cu is not None and hasattr(cu, "numel") else (int(ids.shape[0]) if ids is not None else 0)
        if seqs > 0:
            self.metrics.observe_batch(seqs, tokens)

    @property
    def supports_request_sampling(self) -> bool:
        """Per-request seeds and presence/frequency penalties (the server's sampler is active)."""
        return self.sampler is not None and self.sampler.active

    def is_alive(self) -> bool:
        m = self.manager
        return m is not None and m.is_running() and m.background_thread_status.fatal_error is None

    # -- requests
    def submit(self, request_id: str, prompt_ids: list[int], params: GenerationParams,
               prompt_text: str | None = None, stream: bool = True) -> GenerationRequest:
        """Hand one request to the manager. Streams (and stop strings, which must be
        watched token by token) get every token; otherwise the manager delivers once, at
        the end, with per-token timestamps for the TTFT metric."""
        m = self.manager
        if m is None or not self.is_alive():
            raise EngineFailure("the generation loop is not running")
        req = GenerationRequest(self, request_id, params)
        temperature = params.temperature if params.temperature > 0 else GREEDY_TEMPERATURE
        kwargs: dict[str, Any] = {"temperature": float(temperature), "top_p": float(params.top_p)}
        if self.fault_prompt and prompt_text is not None and self.fault_prompt in prompt_text:
            kwargs["temperature"] = "fault-injected"  # the manager rejects it: a real engine-side failure
        if self.supports_request_sampling:
            # per request, inside the batch: the seed drives only this request's draws
            if params.seed is not None:
                kwargs["seed"] = int(params.seed)
            if params.presence_penalty:
                kwargs["presence_penalty"] = float(params.presence_penalty)
            if params.frequency_penalty:
                kwargs["frequency_penalty"] = float(params.frequency_penalty)
        elif params.presence_penalty or params.frequency_penalty:
            raise EngineFailure("presence and frequency penalties need the server's own sampler")
        elif params.seed is not None:
            import torch

            torch.manual_seed(params.seed)  # transformers samples: reseed its shared generator
        m.register_result_handler(request_id, req._on_output)
        rid = m.add_request(
            list(prompt_ids),
            request_id=request_id,
            max_new_tokens=params.max_new_tokens,
            streaming=stream or bool(params.stop),
            record_timestamps=not (stream or params.stop),
            eos_token_id=-1 if params.ignore_eos else (self.eos_ids or -1),
            **kwargs,
        )
        if rid is None:
            with m.output_router._lock:
                m.output_router.result_handlers.pop(request_id, None)
            raise EngineFailure("the generation loop refused the request (it is stopping or died)")
        return req

    def cancel(self, request_id: str) -> None:
        m = self.manager
        if m is not None:
            m.cancel_request(request_id)
            with m.output_router._lock:
                m.output_router.result_handlers.pop(request_id, None)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 * 1024**3


# --------------------------------------------------------------------------------------------- embeddings


class EmbeddingEngine:
    capability = EMBED

    def __init__(self, model, tokenizer, model_dir: Path, *, device: str, metrics: ServerMetrics) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.metrics = metrics
        self.pooling, self.normalize = self._pooling_from_config(model_dir)
        st = read_json(model_dir / "sentence_bert_config.json")
        limit = st.get("max_seq_length") or getattr(model.config, "max_position_embeddings", 512)
        self.max_model_len = int(min(int(limit), getattr(model.config, "max_position_embeddings", limit) or limit))
        self._lock = threading.Lock()

    @staticmethod
    def _pooling_from_config(model_dir: Path) -> tuple[str, bool]:
        modules = read_json(model_dir / "modules.json")
        pooling, normalize = "mean", False
        if isinstance(modules, list):
            for mod in modules:
                kind = str(mod.get("type", ""))
                if kind.endswith("Normalize"):
                    normalize = True
                elif kind.endswith("Pooling"):
                    cfg = read_json(model_dir / mod.get("path", "1_Pooling") / "config.json")
                    for key, name in (
                        ("pooling_mode_cls_token", "cls"),
                        ("pooling_mode_lasttoken", "lasttoken"),
                        ("pooling_mode_max_tokens", "max"),
                        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
                        ("pooling_mode_mean_tokens", "mean"),
                    ):
                        if cfg.get(key):
                            pooling = name
                            break
        return pooling, normalize

    def start(self) -> None:
        self.embed(["warm-up"])

    def stop(self) -> None:
        pass

    def is_alive(self) -> bool:
        return True

    def embed(self, texts: list[str], batch_size: int = 64) -> tuple[list[list[float]], int]:
        """Embed ``texts`` in forward passes of up to ``batch_size`` inputs (bounded memory)."""
        vectors: list[list[float]] = []
        n_tokens = 0
        for i in range(0, len(texts), batch_size):
            v, n = self._embed_batch(texts[i : i + batch_size])
            vectors.extend(v)
            n_tokens += n
        return vectors, n_tokens

    def _embed_batch(self, texts: list[str]) -> tuple[list[list[float]], int]:
        import torch

        with self._lock, torch.inference_mode():
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_model_len,
                                 return_tensors="pt").to(self.device)
            out = self.model(**enc)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.pooling == "max":
                pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
            elif self.pooling == "lasttoken":
                last = enc["attention_mask"].sum(dim=1) - 1
                pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
            else:
                summed = (hidden * mask).sum(dim=1)
                counts = mask.sum(dim=1).clamp(min=1e-9)
                pooled = summed / (counts.sqrt() if self.pooling == "mean_sqrt_len" else counts)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            n_tokens = int(enc["attention_mask"].sum().item())
            return pooled.float().cpu().tolist(), n_tokens


# --------------------------------------------------------------------------------------------- loading


def load_engine(config: ServerConfig, metrics: ServerMetrics,
                progress: Callable[[str], None] | None = None) -> GenerationEngine | EmbeddingEngine:
    """Load the model named by ``config`` and start its engine (blocking)."""
    say = progress or (lambda _msg: None)
    model_dir = Path(config.model_dir)
    if not (model_dir / "config.json").is_file():
        raise LoadError(f"{model_dir} is not a model folder (no config.json)")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    capability = declared_capability(model_dir)
    cfg = read_json(model_dir / "config.json")
    say(f"capability: {capability}")

    check_remote_code(model_dir, cfg, config.trust_remote_code)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device, cfg.get("dtype") or cfg.get("torch_dtype"))
    say(f"device {device}, dtype {str(dtype).removeprefix('torch.')}")
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    trc = config.trust_remote_code
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trc)
        cls = AutoModelForCausalLM if capability == GENERATE else AutoModel
        model = cls.from_pretrained(str(model_dir), dtype=dtype, trust_remote_code=trc,
                                    attn_implementation="sdpa" if capability == GENERATE else None)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise LoadError(
                f"the model in {model_dir} needs its own Python code; start the server with "
                "--trust-remote-code if you trust that code"
            ) from exc
        raise LoadError(f"cannot load the model in {model_dir}: {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise LoadError(f"cannot load the model in {model_dir}: {str(exc).splitlines()[0]}") from exc
    model = model.to(device).eval()
    if capability == EMBED:
        engine: GenerationEngine | EmbeddingEngine = EmbeddingEngine(model, tokenizer, model_dir, device=device,
                                                                     metrics=metrics)
    else:
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 2048
        max_len = config.max_model_len or limit
        if config.max_model_len and config.max_model_len > limit:
            raise LoadError(f"--max-model-len {config.max_model_len} exceeds the model's context of {limit} tokens")
        if getattr(tokenizer, "chat_template", None) is None:
            log.warning("the tokenizer has no chat template: /v1/chat/completions will answer 400")
        engine = GenerationEngine(model, tokenizer, device=device, max_model_len=max_len,
                                  max_concurrency=config.max_concurrency, metrics=metrics,
                                  fault_prompt=os.environ.get("EZRUNNER_SERVER_FAULT_PROMPT") or None)
    say("warming up")
    engine.start()
    return engine
