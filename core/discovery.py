"""Model discovery: search Hugging Face, ModelScope, local folders and the local
caches; and the details of one model (weights, format, architecture, parameters,
context length, gated status, remote code, revision).

Remote sources run in daemon threads with a deadline and a quick TCP reachability
check first, so with no network each fails fast with a one-line reason while the
local results still come back. Endpoints and tokens are read at call time from
``HF_ENDPOINT`` / ``HF_TOKEN`` / ``MODELSCOPE_ENDPOINT`` (or passed explicitly),
so mirrors work even when the hub libraries were imported earlier.

No hub library is imported at module level.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlparse

from ezrunner.core import modelinfo
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.modelinfo import ModelConfig, WeightFile

SOURCES = ("hf", "modelscope", "local")
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MS_DEFAULT_ENDPOINT = "https://modelscope.cn"
DEFAULT_TIMEOUT = 10.0  # seconds, per remote source
CONNECT_TIMEOUT = 3.0  # seconds, the reachability check


# ---------------------------------------------------------------------- results

@dataclass
class SearchResult:
    id: str  # hub id, or the absolute folder for local results
    source: str  # hf | modelscope | local | hf-cache | modelscope-cache
    downloads: int | None = None
    likes: int | None = None
    parameters: int | None = None
    gated: str | bool | None = None
    size_bytes: int | None = None
    path: str | None = None  # the local folder, when there is one
    last_modified: str | None = None
    pipeline_tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SearchOutcome:
    results: list[SearchResult]
    errors: dict[str, str] = field(default_factory=dict)  # source -> one-line reason

    @property
    def errors_by_source(self) -> dict[str, str]:
        return self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "errors": dict(self.errors)}


@dataclass
class ModelDetails:
    model: str  # hub id, or the absolute folder
    source: str  # hf | modelscope | local | hf-cache | modelscope-cache
    path: str | None = None  # local folder holding the files, when at hand
    revision: str | None = None  # commit sha that would be packed
    files: list[WeightFile] = field(default_factory=list)  # every weight file seen
    config: ModelConfig | None = None
    parameters: int | None = None
    parameters_source: str | None = None  # safetensors-headers | hub-metadata | config
    parameters_exact: bool = False
    parameters_by_dtype: dict[str, int] = field(default_factory=dict)  # safetensors dtype code -> count
    gated: str | bool | None = None
    downloads: int | None = None
    likes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def weight_format(self) -> str | None:
        return modelinfo.primary_format(self.files)

    @property
    def weight_files(self) -> list[WeightFile]:
        return modelinfo.loadable_weights(self.files)

    @property
    def weights_total_bytes(self) -> int | None:
        sizes = [f.size for f in self.weight_files]
        if not sizes or any(s is None for s in sizes):
            return None
        return int(sum(s for s in sizes if s is not None))

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.config and self.config.trust_remote_code)

    @property
    def dtype(self) -> str | None:
        if self.config and self.config.dtype:
            return self.config.dtype
        if self.parameters_by_dtype:
            code = max(self.parameters_by_dtype, key=lambda k: self.parameters_by_dtype[k])
            return modelinfo.SAFETENSORS_DTYPES.get(code.upper(), (code.lower(), 0))[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": self.model,
            "source": self.source,
            "path": self.path,
            "revision": self.revision,
            "weight_format": self.weight_format,
            "weight_files": [{"path": f.path, "size": f.size, "format": f.format} for f in self.weight_files],
            "other_weight_files": [f.path for f in self.files if f not in self.weight_files],
            "weights_total_bytes": self.weights_total_bytes,
            "architecture": c.architecture if c else None,
            "model_type": c.model_type if c else None,
            "parameters": self.parameters,
            "parameters_source": self.parameters_source,
            "parameters_exact": self.parameters_exact,
            "parameters_by_dtype": dict(self.parameters_by_dtype),
            "dtype": self.dtype,
            "context_length": c.max_position_embeddings if c else None,
            "num_hidden_layers": c.num_hidden_layers if c else None,
            "hidden_size": c.hidden_size if c else None,
            "num_attention_heads": c.num_attention_heads if c else None,
            "num_key_value_heads": c.num_key_value_heads if c else None,
            "head_dim": c.head_dim if c else None,
            "vocab_size": c.vocab_size if c else None,
            "num_experts": c.num_experts if c else None,
            "num_experts_per_tok": c.num_experts_per_tok if c else None,
            "quantization": c.quantization if c else None,
            "gated": self.gated,
            "trust_remote_code": self.trust_remote_code,
            "auto_map": c.auto_map if c else None,
            "downloads": self.downloads,
            "likes": self.likes,
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------ environment

def hf_endpoint(endpoint: str | None = None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def hf_token(token: str | None = None) -> str | None:
    return token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def ms_endpoint(endpoint: str | None = None) -> str:
    ep = endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN") or MS_DEFAULT_ENDPOINT
    if not ep.startswith("http"):
        ep = "https://" + ep
    return ep.rstrip("/")


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def ms_cache_dir() -> Path:
    """``$MODELSCOPE_CACHE``; by default ``~/.cache/modelscope`` (older releases keep
    models under its ``hub/`` folder, newer ones under ``models/``; both are scanned)."""
    return Path(os.environ.get("MODELSCOPE_CACHE") or "~/.cache/modelscope").expanduser()


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class SourceUnavailable(EzError):
    """A remote source cannot be reached (no network, offline mode, timeout)."""


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Open (and close) a TCP connection to ``url``'s host (or the proxy in the
    environment); raise :class:`SourceUnavailable` with a one-line reason."""
    u = urlparse(url)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    proxy = os.environ.get("HTTPS_PROXY" if u.scheme == "https" else "HTTP_PROXY") or os.environ.get(
        "https_proxy" if u.scheme == "https" else "http_proxy"
    )
    no_proxy = (os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "").split(",")
    if proxy and host and not any(n.strip() and host.endswith(n.strip().lstrip(".")) for n in no_proxy):
        pu = urlparse(proxy if "://" in proxy else "http://" + proxy)
        host, port = pu.hostname, pu.port or 80
    if not host:
        raise SourceUnavailable(f"bad endpoint URL {url!r}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror as exc:
        raise SourceUnavailable(f"cannot resolve {host} ({exc.strerror or exc}); no network?") from None
    except TimeoutError:
        raise SourceUnavailable(f"{host}:{port} did not answer within {timeout:g}s; no network?") from None
    except OSError as exc:
        raise SourceUnavailable(f"cannot connect to {host}:{port} ({exc.strerror or exc})") from None


def _quiet_hub_loggers() -> None:
    """The hub clients log retries to stderr ("Retrying in 8s"), which would tear
    through the TUI; their failures reach the user as one-line reasons instead."""
    import logging

    for name in ("huggingface_hub", "modelscope", "modelscope_hub"):
        logger = logging.getLogger(name)
        if logger.level < logging.ERROR:
            logger.setLevel(logging.ERROR)


def _run_with_deadline(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run ``fn`` in a daemon thread; give up after ``timeout`` seconds."""
    q: queue.Queue = queue.Queue(maxsize=1)

    def target() -> None:
        try:
            q.put((True, fn()))
        except BaseException as exc:  # noqa: BLE001
            q.put((False, exc))

    threading.Thread(target=target, name=f"ezrunner-{what}", daemon=True).start()
    try:
        ok, value = q.get(timeout=timeout)
    except queue.Empty:
        raise SourceUnavailable(f"{what} did not answer within {timeout:g}s") from None
    if ok:
        return value
    raise value


def _is_network_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    return isinstance(exc, (OSError, TimeoutError)) or any(
        k in name for k in ("Connect", "Timeout", "Network", "Offline", "Protocol", "Proxy")
    )


def one_line_reason(exc: BaseException) -> str:
    """A short, single-line reason for a failed remote call."""
    if isinstance(exc, EzError):
        return exc.message
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if name == "OfflineModeIsEnabled":
        return "offline mode is on (HF_HUB_OFFLINE)"
    if "Timeout" in name:
        return f"timed out ({text or name})"
    if "Connect" in name or "Network" in name:
        return f"cannot connect ({text or name})"
    return f"{name}: {text}" if text else name


# ------------------------------------------------------------------------ search

def search(
    query: str,
    sources: Iterable[str] = SOURCES,
    limit: int = 20,
    *,
    hf_endpoint_url: str | None = None,
    ms_endpoint_url: str | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> SearchOutcome:
    """Search the given sources (``hf``, ``modelscope``, ``local``; ``all`` = every one).
    Remote sources run concurrently; each failure becomes one line in ``errors``."""
    wanted = _normalise_sources(sources)
    if limit < 1:
        raise UsageError(f"--limit: must be at least 1, got {limit}")
    results: list[SearchResult] = []
    errors: dict[str, str] = {}
    remote: dict[str, Callable[[], list[SearchResult]]] = {}
    if "hf" in wanted:
        remote["hf"] = lambda: _search_hf(query, limit, hf_endpoint(hf_endpoint_url), hf_token(token), timeout)
    if "modelscope" in wanted:
        remote["modelscope"] = lambda: _search_ms(query, limit, ms_endpoint(ms_endpoint_url), timeout)

    out: dict[str, tuple[bool, Any]] = {}
    threads = []
    deadline = time.monotonic() + timeout + CONNECT_TIMEOUT + 1
    lock = threading.Lock()

    def runner(name: str, fn: Callable[[], list[SearchResult]]) -> None:
        try:
            value: tuple[bool, Any] = (True, fn())
        except BaseException as exc:  # noqa: BLE001
            value = (False, exc)
        with lock:
            out[name] = value

    for name, fn in remote.items():
        t = threading.Thread(target=runner, args=(name, fn), name=f"ezrunner-search-{name}", daemon=True)
        t.start()
        threads.append(t)
    if "local" in wanted:
        try:
            results.extend(search_local(query, limit))
        except Exception as exc:  # noqa: BLE001 - an unreadable cache is a reason, not a crash
            errors["local"] = one_line_reason(exc)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for name in remote:
        with lock:
            got = out.get(name)
        if got is None:
            errors[name] = f"no answer within {timeout:g}s"
        elif got[0]:
            results.extend(got[1])
        else:
            errors[name] = one_line_reason(got[1])
    return SearchOutcome(results, errors)


def _normalise_sources(sources: Iterable[str]) -> list[str]:
    if isinstance(sources, str):
        sources = [sources]
    out: list[str] = []
    for s in sources:
        s = s.strip().lower()
        if s == "all":
            return list(SOURCES)
        if s in ("ms",):
            s = "modelscope"
        if s == "huggingface":
            s = "hf"
        if s not in SOURCES:
            raise UsageError(f"--source: unknown source {s!r}", hint="choose hf, modelscope, local or all")
        if s not in out:
            out.append(s)
    return out


_HF_EXPAND = ["downloads", "likes", "gated", "safetensors", "lastModified", "pipeline_tag", "library_name"]


def _search_hf(query: str, limit: int, endpoint: str, token: str | None, timeout: float) -> list[SearchResult]:
    if _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE"):
        raise SourceUnavailable("offline mode is on (HF_HUB_OFFLINE)")
    check_reachable(endpoint)

    def call() -> list[SearchResult]:
        from huggingface_hub import HfApi

        _quiet_hub_loggers()  # after the import: importing huggingface_hub resets its level
        api = HfApi(endpoint=endpoint, token=token)
        out = []
        for m in api.list_models(search=query or None, sort="downloads", limit=limit, expand=_HF_EXPAND):
            st = getattr(m, "safetensors", None)
            lm = getattr(m, "last_modified", None)
            out.append(
                SearchResult(
                    id=m.id,
                    source="hf",
                    downloads=getattr(m, "downloads", None),
                    likes=getattr(m, "likes", None),
                    parameters=getattr(st, "total", None) if st else None,
                    gated=getattr(m, "gated", None),
                    last_modified=lm.isoformat() if hasattr(lm, "isoformat") else lm,
                    pipeline_tag=getattr(m, "pipeline_tag", None),
                )
            )
        return out

    return _run_with_deadline(call, timeout, f"Hugging Face ({endpoint})")


def _modelscope_api(endpoint: str, timeout: float):
    """The ModelScope client. modelscope >= 1.38 ships ``modelscope_hub``, whose
    ``LegacyHubApi`` is what ``modelscope.hub.api.HubApi`` wraps; importing it
    directly keeps torch out (``modelscope.hub.api`` pulls torch in via its logger).
    Older releases only have ``modelscope.hub.api.HubApi``."""
    try:
        from modelscope_hub.compat import LegacyHubApi
    except ImportError:
        from modelscope.hub.api import HubApi

        _quiet_hub_loggers()
        try:
            return HubApi(endpoint=endpoint, timeout=int(max(1, timeout)), max_retries=1)
        except TypeError:  # older signatures
            return HubApi(endpoint=endpoint)
    _quiet_hub_loggers()
    return LegacyHubApi(endpoint=endpoint)


def _search_ms(query: str, limit: int, endpoint: str, timeout: float) -> list[SearchResult]:
    check_reachable(endpoint)

    def call() -> list[SearchResult]:
        api = _modelscope_api(endpoint, timeout)
        # Feature detection: modelscope >= 1.38 has list_repos(search=...);
        # older releases list by owner only.
        if hasattr(api, "list_repos"):
            page = api.list_repos("model", search=query or None, page_number=1, page_size=min(limit, 50))
            items = list(getattr(page, "items", None) or [])
            out = []
            for r in items[:limit]:
                rid = getattr(r, "repo_id", None) or f"{r.owner}/{r.name}"
                out.append(
                    SearchResult(
                        id=rid,
                        source="modelscope",
                        downloads=getattr(r, "downloads", None),
                        likes=getattr(r, "likes", None),
                        gated=getattr(r, "gated", None),
                        size_bytes=getattr(r, "file_size", None),
                        last_modified=str(r.last_modified) if getattr(r, "last_modified", None) else None,
                    )
                )
            return out
        if "/" not in query:
            raise SourceUnavailable("this modelscope version cannot search by text; give OWNER/NAME or upgrade modelscope")
        owner = query.split("/", 1)[0]
        data = api.list_models(owner, page_number=1, page_size=min(limit, 50))
        models = data.get("Models") or []
        return [
            SearchResult(id=f"{owner}/{m.get('Name')}", source="modelscope", downloads=m.get("Downloads"))
            for m in models
            if query.split("/", 1)[1].lower() in str(m.get("Name", "")).lower()
        ][:limit]

    return _run_with_deadline(call, timeout, f"ModelScope ({endpoint})")


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", ".\\"))
        or text in (".", "..")
        or text.count("/") >= 2
        or "\\" in text
    )


def search_local(query: str, limit: int = 50) -> list[SearchResult]:
    """Local folders (when ``query`` is a path), the HF cache, the ModelScope cache
    and the demo models written by ``ezrunner demo-model``."""
    out: list[SearchResult] = []
    q = (query or "").strip()
    p = Path(q).expanduser() if q else None
    if p is not None and _looks_like_path(q) or (p is not None and p.is_dir()):
        if p.is_dir() and (p / "config.json").is_file():
            out.append(_local_result(p, "local"))
        elif p.is_dir():
            for cfg in sorted(p.glob("*/config.json"))[:limit]:
                out.append(_local_result(cfg.parent, "local"))
        return out
    needle = q.lower()
    for r in _hf_cache_results() + _ms_cache_results() + _demo_results():
        if needle in r.id.lower():
            out.append(r)
    return out[:limit]


def _local_result(folder: Path, source: str, rid: str | None = None) -> SearchResult:
    files = modelinfo.loadable_weights(modelinfo.inventory(folder))
    size = sum(f.size or 0 for f in files) or None
    return SearchResult(id=rid or str(folder.resolve()), source=source, size_bytes=size, path=str(folder.resolve()))


def _hf_cache_results() -> list[SearchResult]:
    root = hf_cache_dir()
    if not root.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(root)
    except Exception:  # noqa: BLE001 - a missing/corrupt cache is no result, not an error
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        snap = _best_snapshot(repo)
        out.append(
            SearchResult(
                id=repo.repo_id,
                source="hf-cache",
                size_bytes=int(repo.size_on_disk),
                path=str(snap.snapshot_path) if snap else None,
            )
        )
    return out


def _best_snapshot(repo: Any) -> Any:
    revs = list(repo.revisions)
    if not revs:
        return None
    for r in revs:
        if "main" in r.refs:
            return r
    return max(revs, key=lambda r: r.last_modified)


def _ms_cache_results() -> list[SearchResult]:
    root = ms_cache_dir()
    if not root.is_dir():
        return []
    out = []
    seen: set[str] = set()
    folders: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < 4 else []
        if "config.json" in filenames:
            folders.append(Path(dirpath))
            dirnames[:] = []  # a model folder: do not look inside
    for folder in sorted(folders):
        cfg = folder / "config.json"
        rel = cfg.parent.relative_to(root).parts
        parts = [x for x in rel if x not in ("models", "hub")]
        if len(parts) == 1 and "--" in parts[0]:
            parts = parts[0].split("--", 1)
        if len(parts) != 2:
            continue
        rid = f"{parts[0]}/{parts[1].replace('___', '.')}"
        if rid in seen:
            continue
        seen.add(rid)
        out.append(_local_result(cfg.parent, "modelscope-cache", rid))
    return out


def _demo_results() -> list[SearchResult]:
    from ezrunner.core import locations

    root = locations.demo_model_dir()
    if not root.is_dir():
        return []
    return [_local_result(c.parent, "local", f"demo-model/{c.parent.name}") for c in sorted(root.glob("*/config.json"))]


# ----------------------------------------------------------------------- details

_MS_PREFIXES = ("modelscope:", "ms:", "modelscope://", "ms://")


def model_details(
    model: str | os.PathLike[str],
    revision: str | None = None,
    *,
    source: str = "auto",
    hf_endpoint_url: str | None = None,
    ms_endpoint_url: str | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ModelDetails:
    """Details of one model. ``model`` is a local folder, a Hugging Face id, or a
    ModelScope id (``source="modelscope"`` or an ``ms:`` prefix). Bad input raises
    :class:`UsageError` (exit 2) naming it."""
    text = os.fspath(model).strip()
    if not text:
        raise UsageError("no model given", hint="give a hub id such as Qwen/Qwen2.5-0.5B-Instruct or a folder path")
    for prefix in _MS_PREFIXES:
        if text.lower().startswith(prefix):
            text, source = text[len(prefix):], "modelscope"
            break
    p = Path(text).expanduser()
    if source in ("auto", "local") and p.is_dir():
        return local_details(p)
    if source == "local" or (source == "auto" and _looks_like_path(text)) or (source == "auto" and p.exists()):
        if p.exists() and not p.is_dir():
            raise UsageError(f"{text}: not a folder", hint="give the model folder (the one holding config.json)")
        raise UsageError(f"no such model folder: {text}", hint="check the path; hub ids look like OWNER/NAME")
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", text):
        raise UsageError(f"not a model id or folder: {text!r}", hint="hub ids look like OWNER/NAME; folders need a path such as ./my-model")
    if source == "modelscope":
        return _ms_details(text, revision, ms_endpoint(ms_endpoint_url), timeout)
    if source not in ("auto", "hf"):
        raise UsageError(f"--source: unknown source {source!r}", hint="choose hf, modelscope or local")
    return _hf_details(text, revision, hf_endpoint(hf_endpoint_url), hf_token(token), timeout)


def local_details(folder: str | os.PathLike[str], *, model: str | None = None, source: str = "local",
                  revision: str | None = None) -> ModelDetails:
    """Details of a model folder on this machine (safetensors headers are read)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"no such model folder: {folder}")
    cfg = modelinfo.load_config(root)
    files = modelinfo.inventory(root)
    d = ModelDetails(model=model or str(root), source=source, path=str(root), revision=revision, files=files, config=cfg)
    _fill_parameters_local(d, root)
    if not files:
        d.notes.append("no weight files found in the folder")
    return d


def _fill_parameters_local(d: ModelDetails, root: Path) -> None:
    st = [root / f.path for f in d.files if f.format == "safetensors"]
    if st:
        try:
            summary = modelinfo.summarize_safetensors(st)
            d.parameters = summary.parameters
            d.parameters_by_dtype = dict(summary.parameters_by_dtype)
            d.parameters_source = "safetensors-headers"
            d.parameters_exact = True
            return
        except (EzError, OSError) as exc:
            d.notes.append(f"safetensors headers unreadable ({one_line_reason(exc)}); counting from config.json")
    _fill_parameters_from_config(d)


def _fill_parameters_from_config(d: ModelDetails) -> None:
    if d.config is None:
        return
    n, exact = modelinfo.count_parameters(d.config)
    if n is not None:
        d.parameters, d.parameters_source, d.parameters_exact = n, "config", exact
        if not exact:
            d.notes.append(f"parameter count for model_type {d.config.model_type!r} is an estimate from config.json")


def _hf_details(repo_id: str, revision: str | None, endpoint: str, token: str | None, timeout: float) -> ModelDetails:
    offline = _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE")
    reason: str | None = "offline mode is on (HF_HUB_OFFLINE)" if offline else None
    if not offline:
        try:
            check_reachable(endpoint)
            return _run_with_deadline(
                lambda: _hf_details_remote(repo_id, revision, endpoint, token, timeout), timeout * 2, f"Hugging Face ({endpoint})"
            )
        except SourceUnavailable as exc:
            reason = exc.message
        except UsageError:
            raise
        except EzError:
            raise
        except Exception as exc:  # noqa: BLE001
            if not _is_network_error(exc):
                raise EzError(f"Hugging Face ({endpoint}): {one_line_reason(exc)}") from None
            reason = one_line_reason(exc)
    cached = _hf_cached_details(repo_id, revision)
    if cached is not None:
        cached.notes.append(f"Hugging Face not reachable ({reason}); details from the local cache")
        return cached
    raise EzError(
        f"model {repo_id!r}: Hugging Face is not reachable ({reason}) and the model is not in the local cache ({hf_cache_dir()})",
        hint="check the network or HF_ENDPOINT (mirror), or give a local model folder",
    )


def _hf_details_remote(repo_id: str, revision: str | None, endpoint: str, token: str | None, timeout: float) -> ModelDetails:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    _quiet_hub_loggers()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
    except GatedRepoError:
        raise UsageError(f"model {repo_id!r} is gated on Hugging Face and this token has no access",
                         hint="accept the licence on the model page and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise UsageError(f"model {repo_id!r}: no revision {revision!r} on Hugging Face", hint="check --revision") from None
    except RepositoryNotFoundError:
        raise UsageError(
            f"model {repo_id!r} not found on Hugging Face ({endpoint})",
            hint="check the id (OWNER/NAME); private or gated models need HF_TOKEN; a local folder needs a path such as ./name",
        ) from None
    files = []
    for s in info.siblings or []:
        fmt = modelinfo.weight_format(s.rfilename)
        if fmt:
            size = getattr(s, "size", None)
            if size is None and getattr(s, "lfs", None) is not None:
                size = getattr(s.lfs, "size", None)
            files.append(WeightFile(s.rfilename, size, fmt))
    files.sort(key=lambda f: f.path)
    d = ModelDetails(
        model=repo_id,
        source="hf",
        revision=info.sha,
        files=files,
        gated=info.gated if info.gated is not None else False,
        downloads=getattr(info, "downloads", None),
        likes=getattr(info, "likes", None),
    )
    d.config = _hf_fetch_config(repo_id, info.sha or revision or "main", endpoint, token, timeout, d)
    st = getattr(info, "safetensors", None)
    if st is not None and getattr(st, "parameters", None):
        d.parameters_by_dtype = {str(k).upper(): int(v) for k, v in st.parameters.items()}
        d.parameters = int(getattr(st, "total", 0) or sum(d.parameters_by_dtype.values()))
        d.parameters_source, d.parameters_exact = "hub-metadata", True
    else:
        _fill_parameters_from_config(d)
    return d


def _hf_fetch_config(repo_id: str, revision: str, endpoint: str, token: str | None, timeout: float,
                     d: ModelDetails) -> ModelConfig | None:
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    url = hf_hub_url(repo_id, "config.json", revision=revision, endpoint=endpoint)
    resp = get_session().get(url, headers=build_hf_headers(token=token), timeout=timeout, follow_redirects=True)
    if resp.status_code in (401, 403):
        d.notes.append("config.json is not readable without access (gated): set HF_TOKEN after accepting the licence")
        return None
    if resp.status_code == 404:
        d.notes.append("the repository has no config.json (not a transformers model?)")
        return None
    if resp.status_code >= 400:
        raise EzError(f"Hugging Face ({endpoint}): config.json answered HTTP {resp.status_code}")
    try:
        data = json.loads(resp.content)
    except ValueError:
        raise UsageError(f"{repo_id}/config.json: not valid JSON") from None
    return modelinfo.parse_config(data, where=f"{repo_id}/config.json")


def _hf_cached_details(repo_id: str, revision: str | None) -> ModelDetails | None:
    root = hf_cache_dir()
    if not root.is_dir():
        return None
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(root)
    except Exception:  # noqa: BLE001
        return None
    for repo in info.repos:
        if repo.repo_type == "model" and repo.repo_id == repo_id:
            snap = None
            if revision:
                snap = next((r for r in repo.revisions if r.commit_hash == revision or revision in r.refs), None)
            snap = snap or _best_snapshot(repo)
            if snap is None or not (Path(snap.snapshot_path) / "config.json").is_file():
                return None
            return local_details(snap.snapshot_path, model=repo_id, source="hf-cache", revision=snap.commit_hash)
    return None


def _ms_details(model_id: str, revision: str | None, endpoint: str, timeout: float) -> ModelDetails:
    try:
        check_reachable(endpoint)
        return _run_with_deadline(lambda: _ms_details_remote(model_id, revision, endpoint, timeout), timeout * 2,
                                  f"ModelScope ({endpoint})")
    except SourceUnavailable as exc:
        reason = exc.message
    except EzError:
        raise
    except Exception as exc:  # noqa: BLE001
        name = type(exc).__name__
        if "NotExist" in name or "NotFound" in name:
            raise UsageError(f"model {model_id!r} not found on ModelScope ({endpoint})",
                             hint="check the id (OWNER/NAME) or use --source hf") from None
        raise EzError(f"ModelScope ({endpoint}): {one_line_reason(exc)}") from None
    for r in _ms_cache_results():
        if r.id == model_id and r.path:
            d = local_details(r.path, model=model_id, source="modelscope-cache")
            d.notes.append(f"ModelScope not reachable ({reason}); details from the local cache")
            return d
    raise EzError(f"model {model_id!r}: ModelScope is not reachable ({reason}) and the model is not in the local cache",
                     hint="check the network or MODELSCOPE_ENDPOINT, or give a local model folder")


def _ms_details_remote(model_id: str, revision: str | None, endpoint: str, timeout: float) -> ModelDetails:
    import requests

    api = _modelscope_api(endpoint, timeout)
    meta = api.get_model(model_id, revision=revision) or {}
    rev = revision or "master"
    raw_files = api.get_model_files(model_id, revision=rev, recursive=True)
    files = []
    for f in raw_files or []:
        if str(f.get("Type", "blob")).lower() == "tree":
            continue
        path = f.get("Path") or f.get("Name") or ""
        fmt = modelinfo.weight_format(path)
        if fmt:
            files.append(WeightFile(path, f.get("Size"), fmt))
    files.sort(key=lambda f: f.path)
    sha = meta.get("Revision") or meta.get("revision") or meta.get("sha")
    d = ModelDetails(
        model=model_id,
        source="modelscope",
        revision=sha or rev,
        files=files,
        gated=bool(meta.get("gated") or meta.get("Gated")),
        downloads=meta.get("downloads") or meta.get("Downloads"),
    )
    if not sha:
        d.notes.append(f"ModelScope reports no commit sha; the {rev!r} branch is what would be packed")
    # The file URL of modelscope.hub.file_download.get_file_download_url (not imported: it pulls torch).
    url = f"{endpoint}/api/v1/models/{model_id}/repo?Revision={quote_plus(rev)}&FilePath=config.json"
    resp = requests.get(url, timeout=timeout)
    if resp.status_code == 200:
        try:
            d.config = modelinfo.parse_config(resp.json(), where=f"{model_id}/config.json")
        except ValueError:
            d.notes.append("config.json is not valid JSON")
    else:
        d.notes.append(f"config.json not readable (HTTP {resp.status_code})")
    _fill_parameters_from_config(d)
    return d
