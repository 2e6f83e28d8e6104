"""ModelScope: search (``list_repos``), details (``get_model`` + the file list +
``config.json``, the local cache when unreachable), the local cache
(``$MODELSCOPE_CACHE``) and the download for ``pack``.

The client is ``modelscope_hub`` (what ``modelscope.hub.api`` wraps since 1.38),
imported directly because ``modelscope.hub.api`` pulls in torch through its
logger; older releases fall back to ``modelscope`` itself. Imported inside the
calls only.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from ezrunner.core import events as ev
from ezrunner.core import modelinfo
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.hubs import download as dl
from ezrunner.core.hubs.base import (
    Check,
    Download,
    FetchedModel,
    HubConfig,
    ModelDetails,
    ModelRef,
    SearchResult,
)
from ezrunner.core.hubs.local import fill_parameters_from_config, local_details, local_result
from ezrunner.core.hubs.net import (
    SourceUnavailable,
    check_reachable,
    first_line,
    one_line_reason,
    quiet_hub_loggers,
    with_deadline,
)
from ezrunner.core.modelinfo import WeightFile


def ms_cache_dir() -> Path:
    """``$MODELSCOPE_CACHE``; by default ``~/.cache/modelscope`` (older releases keep
    models under its ``hub/`` folder, newer ones under ``models/``; both are scanned)."""
    return Path(os.environ.get("MODELSCOPE_CACHE") or "~/.cache/modelscope").expanduser()


def _api(endpoint: str, timeout: float) -> Any:
    """The ModelScope client: ``modelscope_hub``'s ``LegacyHubApi`` (>= 1.38), else
    ``modelscope.hub.api.HubApi``."""
    try:
        from modelscope_hub.compat import LegacyHubApi
    except ImportError:
        from modelscope.hub.api import HubApi

        quiet_hub_loggers()
        try:
            return HubApi(endpoint=endpoint, timeout=int(max(1, timeout)), max_retries=1)
        except TypeError:  # older signatures
            return HubApi(endpoint=endpoint)
    quiet_hub_loggers()
    return LegacyHubApi(endpoint=endpoint)


def _snapshot_download() -> tuple[Any, str]:
    """(snapshot_download, client version), torch-free where the client allows."""
    try:
        from modelscope_hub import __version__ as version
        from modelscope_hub.compat.snapshot_download import snapshot_download
    except ImportError:
        try:
            import modelscope
            from modelscope import snapshot_download
        except ImportError:
            raise EzError("modelscope is not installed", hint="pip install modelscope") from None
        version = getattr(modelscope, "__version__", "?")
    quiet_hub_loggers()
    return snapshot_download, version


class ModelScopeHub:
    source = "modelscope"

    # ---- search
    def search(self, query: str, limit: int, cfg: HubConfig) -> list[SearchResult]:
        endpoint = cfg.ms_url()
        check_reachable(endpoint)
        return with_deadline(lambda: _search(_api(endpoint, cfg.timeout), query, limit), cfg.timeout,
                             f"ModelScope ({endpoint})")

    # ---- details
    def details(self, ref: ModelRef, cfg: HubConfig) -> ModelDetails:
        endpoint = cfg.ms_url()
        try:
            check_reachable(endpoint)
            return with_deadline(lambda: _details_remote(ref, endpoint, cfg.timeout), cfg.timeout * 2,
                                 f"ModelScope ({endpoint})")
        except SourceUnavailable as exc:
            reason = exc.message
        except EzError:
            raise
        except Exception as exc:  # noqa: BLE001
            name = type(exc).__name__
            if "NotExist" in name or "NotFound" in name:
                raise UsageError(f"model {ref.id!r} not found on ModelScope ({endpoint})",
                                 hint="check the id (OWNER/NAME) or use --source hf") from None
            raise EzError(f"ModelScope ({endpoint}): {one_line_reason(exc)}") from None
        for r in self.cached():
            if r.id == ref.id and r.path:
                d = local_details(r.path, model=ref.id, source="modelscope-cache")
                d.notes.append(f"ModelScope not reachable ({reason}); details from the local cache")
                return d
        raise EzError(f"model {ref.id!r}: ModelScope is not reachable ({reason}) and the model is not in the local cache",
                      hint="check the network or MODELSCOPE_ENDPOINT, or give a local model folder")

    # ---- download
    def download(self, ref: ModelRef, cfg: HubConfig, check: Check) -> Download:
        snapshot_download, version = _snapshot_download()
        dest = dl.destination("modelscope", ref.id, ref.revision or "master")
        kwargs = _download_kwargs(snapshot_download, ref, cfg, dest)
        yield ev.PhaseStarted("download", label=f"{ref.id} (ModelScope {version})")
        try:
            path = yield from dl.run_download(lambda: Path(snapshot_download(ref.id, **kwargs)), dest, None, check,
                                              name="ezrunner-download")
        except EzError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise EzError(f"downloading {ref.id} from ModelScope failed: {first_line(exc)}",
                          hint="check the network or MODELSCOPE_ENDPOINT; run again to resume") from None
        return FetchedModel(path, ref)

    # ---- the local cache
    def cached(self) -> list[SearchResult]:
        root = ms_cache_dir()
        if not root.is_dir():
            return []
        out = []
        seen: set[str] = set()
        for folder in _model_folders(root):
            rid = _cache_id(folder.relative_to(root).parts)
            if rid is None or rid in seen:
                continue
            seen.add(rid)
            out.append(local_result(folder, "modelscope-cache", rid))
        return out


def _download_kwargs(snapshot_download: Any, ref: ModelRef, cfg: HubConfig, dest: Path) -> dict[str, object]:
    """What this client's ``snapshot_download`` takes (feature-detected)."""
    params = inspect.signature(snapshot_download).parameters
    kwargs: dict[str, object] = {"revision": ref.revision} if ref.revision else {}
    kwargs["local_dir" if "local_dir" in params else "cache_dir"] = str(dest)
    if "allow_patterns" in params:
        kwargs["allow_patterns"] = ["*.safetensors", *dl.SMALL_FILES]
    if "ignore_patterns" in params:
        kwargs["ignore_patterns"] = list(dl.WEIGHT_DUPLICATES)
    if cfg.token and "token" in params:
        kwargs["token"] = cfg.token
    if "endpoint" in params:
        kwargs["endpoint"] = cfg.ms_url()
    return kwargs


# ------------------------------------------------------------------------- search

def _search(api: Any, query: str, limit: int) -> list[SearchResult]:
    # Feature detection: modelscope >= 1.38 has list_repos(search=...);
    # older releases list by owner only.
    if not hasattr(api, "list_repos"):
        return _search_by_owner(api, query, limit)
    page = api.list_repos("model", search=query or None, page_number=1, page_size=min(limit, 50))
    out = []
    for r in list(getattr(page, "items", None) or [])[:limit]:
        out.append(
            SearchResult(
                id=getattr(r, "repo_id", None) or f"{r.owner}/{r.name}",
                source="modelscope",
                downloads=getattr(r, "downloads", None),
                likes=getattr(r, "likes", None),
                gated=getattr(r, "gated", None),
                size_bytes=getattr(r, "file_size", None),
                last_modified=str(r.last_modified) if getattr(r, "last_modified", None) else None,
            )
        )
    return out


def _search_by_owner(api: Any, query: str, limit: int) -> list[SearchResult]:
    if "/" not in query:
        raise SourceUnavailable("this modelscope version cannot search by text; give OWNER/NAME or upgrade modelscope")
    owner, name = query.split("/", 1)
    data = api.list_models(owner, page_number=1, page_size=min(limit, 50))
    return [
        SearchResult(id=f"{owner}/{m.get('Name')}", source="modelscope", downloads=m.get("Downloads"))
        for m in data.get("Models") or []
        if name.lower() in str(m.get("Name", "")).lower()
    ][:limit]


# ------------------------------------------------------------------------ details

def _details_remote(ref: ModelRef, endpoint: str, timeout: float) -> ModelDetails:
    api = _api(endpoint, timeout)
    meta = api.get_model(ref.id, revision=ref.revision) or {}
    rev = ref.revision or "master"
    files = []
    for f in api.get_model_files(ref.id, revision=rev, recursive=True) or []:
        if str(f.get("Type", "blob")).lower() == "tree":
            continue
        path = f.get("Path") or f.get("Name") or ""
        fmt = modelinfo.weight_format(path)
        if fmt:
            files.append(WeightFile(path, f.get("Size"), fmt))
    files.sort(key=lambda f: f.path)
    sha = meta.get("Revision") or meta.get("revision") or meta.get("sha")
    d = ModelDetails(
        model=ref.id,
        source="modelscope",
        revision=sha or rev,
        files=files,
        gated=bool(meta.get("gated") or meta.get("Gated")),
        downloads=meta.get("downloads") or meta.get("Downloads"),
    )
    if not sha:
        d.notes.append(f"ModelScope reports no commit sha; the {rev!r} branch is what would be packed")
    _read_config(d, endpoint, rev, timeout)
    fill_parameters_from_config(d)
    return d


def _read_config(d: ModelDetails, endpoint: str, rev: str, timeout: float) -> None:
    import requests

    # The file URL of modelscope.hub.file_download.get_file_download_url (not imported: it pulls torch).
    url = f"{endpoint}/api/v1/models/{d.model}/repo?Revision={quote_plus(rev)}&FilePath=config.json"
    resp = requests.get(url, timeout=timeout)
    if resp.status_code != 200:
        d.notes.append(f"config.json not readable (HTTP {resp.status_code})")
        return
    try:
        d.config = modelinfo.parse_config(resp.json(), where=f"{d.model}/config.json")
    except ValueError:
        d.notes.append("config.json is not valid JSON")


# -------------------------------------------------------------------------- cache

def _model_folders(root: Path) -> list[Path]:
    """Folders holding a config.json, up to four levels under ``root``."""
    folders: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < 4 else []
        if "config.json" in filenames:
            folders.append(Path(dirpath))
            dirnames[:] = []  # a model folder: do not look inside
    return sorted(folders)


def _cache_id(rel: tuple[str, ...]) -> str | None:
    """OWNER/NAME from a cache folder's path: ``hub/OWNER/NAME``, ``models/OWNER--NAME``
    or ``OWNER/NAME``, with ``___`` standing for ``.``."""
    parts = [x for x in rel if x not in ("models", "hub")]
    if len(parts) == 1 and "--" in parts[0]:
        parts = parts[0].split("--", 1)
    if len(parts) != 2:
        return None
    return f"{parts[0]}/{parts[1].replace('___', '.')}"
