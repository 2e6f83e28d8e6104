"""Hugging Face: search (``HfApi.list_models``), details (``model_info`` with file
metadata + ``config.json`` at the exact commit, the local cache when the hub is
unreachable), the local cache (``scan_cache_dir``) and the download for ``pack``
(pinned to the resolved commit, safetensors-only filtering, resume).

``huggingface_hub`` is imported inside the calls only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
from ezrunner.core.hubs.local import fill_parameters_from_config, local_details
from ezrunner.core.hubs.net import (
    SourceUnavailable,
    check_reachable,
    first_line,
    hf_offline,
    is_network_error,
    one_line_reason,
    quiet_hub_loggers,
    with_deadline,
)
from ezrunner.core.modelinfo import ModelConfig, WeightFile

_EXPAND = ["downloads", "likes", "gated", "safetensors", "lastModified", "pipeline_tag", "library_name"]


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _api(cfg: HubConfig) -> Any:
    from huggingface_hub import HfApi

    quiet_hub_loggers()  # after the import: importing huggingface_hub resets its level
    return HfApi(endpoint=cfg.hf_url(), token=cfg.hf_token())


def _result(m: Any) -> SearchResult:
    st = getattr(m, "safetensors", None)
    lm = getattr(m, "last_modified", None)
    return SearchResult(
        id=m.id,
        source="hf",
        downloads=getattr(m, "downloads", None),
        likes=getattr(m, "likes", None),
        parameters=getattr(st, "total", None) if st else None,
        gated=getattr(m, "gated", None),
        last_modified=lm.isoformat() if hasattr(lm, "isoformat") else lm,
        pipeline_tag=getattr(m, "pipeline_tag", None),
    )


class HfHub:
    source = "hf"

    # ---- search
    def search(self, query: str, limit: int, cfg: HubConfig) -> list[SearchResult]:
        if hf_offline():
            raise SourceUnavailable("offline mode is on (HF_HUB_OFFLINE)")
        endpoint = cfg.hf_url()
        check_reachable(endpoint)

        def call() -> list[SearchResult]:
            models = _api(cfg).list_models(search=query or None, sort="downloads", limit=limit, expand=_EXPAND)
            return [_result(m) for m in models]

        return with_deadline(call, cfg.timeout, f"Hugging Face ({endpoint})")

    # ---- details
    def details(self, ref: ModelRef, cfg: HubConfig) -> ModelDetails:
        endpoint = cfg.hf_url()
        reason: str | None = "offline mode is on (HF_HUB_OFFLINE)" if hf_offline() else None
        if reason is None:
            try:
                check_reachable(endpoint)
                return with_deadline(lambda: _details_remote(ref, cfg), cfg.timeout * 2, f"Hugging Face ({endpoint})")
            except SourceUnavailable as exc:
                reason = exc.message
            except EzError:
                raise
            except Exception as exc:  # noqa: BLE001
                if not is_network_error(exc):
                    raise EzError(f"Hugging Face ({endpoint}): {one_line_reason(exc)}") from None
                reason = one_line_reason(exc)
        cached = _cached_details(ref.id, ref.revision)
        if cached is not None:
            cached.notes.append(f"Hugging Face not reachable ({reason}); details from the local cache")
            return cached
        raise EzError(
            f"model {ref.id!r}: Hugging Face is not reachable ({reason}) and the model is not in the local cache ({hf_cache_dir()})",
            hint="check the network or HF_ENDPOINT (mirror), or give a local model folder",
        )

    # ---- download
    def download(self, ref: ModelRef, cfg: HubConfig, check: Check) -> Download:
        """Pinned to the commit ``ref.revision`` resolves to; only the wanted files."""
        try:
            info = _api(cfg).model_info(ref.id, revision=ref.revision, files_metadata=True)
        except Exception as exc:  # noqa: BLE001 - mapped to one line
            raise _download_error(exc, ref, cfg) from None
        commit = info.sha or ref.revision
        siblings = info.siblings or []
        allow, ignore = dl.choose_patterns([s.rfilename for s in siblings])
        total = sum((s.size or 0) for s in siblings if dl.wanted(s.rfilename, allow, ignore)) or None
        dest = dl.destination("huggingface", ref.id, commit or "main")
        yield ev.PhaseStarted("download", label=f"{ref.id}@{(commit or 'main')[:12]}", total=total)

        def fetch() -> Path:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(ref.id, revision=commit, local_dir=str(dest), allow_patterns=allow,
                                          ignore_patterns=ignore, token=cfg.hf_token(), endpoint=cfg.hf_url()))

        try:
            path = yield from dl.run_download(fetch, dest, total, check, name="ezrunner-download")
        except EzError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to one line
            raise _download_error(exc, ref, cfg) from None
        return FetchedModel(path, ModelRef("hf", ref.id, commit))

    # ---- the local cache
    def cached(self) -> list[SearchResult]:
        info = _scan_cache()
        if info is None:
            return []
        out = []
        for repo in sorted(info.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model":
                continue
            snap = _best_snapshot(repo)
            out.append(SearchResult(id=repo.repo_id, source="hf-cache", size_bytes=int(repo.size_on_disk),
                                    path=str(snap.snapshot_path) if snap else None))
        return out


# ------------------------------------------------------------------------ details

def _details_remote(ref: ModelRef, cfg: HubConfig) -> ModelDetails:
    info = _model_info(ref, cfg)
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
        model=ref.id,
        source="hf",
        revision=info.sha,
        files=files,
        gated=info.gated if info.gated is not None else False,
        downloads=getattr(info, "downloads", None),
        likes=getattr(info, "likes", None),
    )
    d.config = _fetch_config(ref.id, info.sha or ref.revision or "main", cfg, d)
    _fill_parameters_remote(d, _safetensors_info(info, ref, cfg, d))
    return d


def _safetensors_info(info: Any, ref: ModelRef, cfg: HubConfig, d: ModelDetails) -> Any:
    """The hub's safetensors metadata (element counts per dtype over every tensor of the
    checkpoint). The model info answer carries it; when it does not (``files_metadata`` and
    ``expand`` cannot be combined), one more call asks for it with ``expand=["safetensors"]``."""
    st = getattr(info, "safetensors", None)
    if st is not None or d.weight_format != "safetensors":
        return st
    try:
        return getattr(_api(cfg).model_info(ref.id, revision=info.sha or ref.revision, expand=["safetensors"],
                                            timeout=cfg.timeout), "safetensors", None)
    except Exception as exc:  # noqa: BLE001 - the count then comes from config.json
        d.notes.append(f"the hub's safetensors metadata is not readable ({one_line_reason(exc)})")
        return None


def _fill_parameters_remote(d: ModelDetails, st: Any) -> None:
    """``hub-metadata`` when the hub counted the tensors (exact counts and dtypes, so quantized
    checkpoints are sized as stored), else the count from config.json."""
    if st is None or not getattr(st, "parameters", None):
        fill_parameters_from_config(d)
        return
    d.parameters_by_dtype = {str(k).upper(): int(v) for k, v in st.parameters.items()}
    d.parameters = int(getattr(st, "total", 0) or sum(d.parameters_by_dtype.values()))
    d.parameters_source, d.parameters_exact = "hub-metadata", True


def _model_info(ref: ModelRef, cfg: HubConfig) -> Any:
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = ref.id, ref.revision
    try:
        return _api(cfg).model_info(repo_id, revision=revision, files_metadata=True, timeout=cfg.timeout)
    except GatedRepoError:
        raise UsageError(f"model {repo_id!r} is gated on Hugging Face and this token has no access",
                         hint="accept the licence on the model page and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise UsageError(f"model {repo_id!r}: no revision {revision!r} on Hugging Face", hint="check --revision") from None
    except RepositoryNotFoundError:
        raise UsageError(
            f"model {repo_id!r} not found on Hugging Face ({cfg.hf_url()})",
            hint="check the id (OWNER/NAME); private or gated models need HF_TOKEN; a local folder needs a path such as ./name",
        ) from None


def _fetch_config(repo_id: str, revision: str, cfg: HubConfig, d: ModelDetails) -> ModelConfig | None:
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    endpoint = cfg.hf_url()
    url = hf_hub_url(repo_id, "config.json", revision=revision, endpoint=endpoint)
    resp = get_session().get(url, headers=build_hf_headers(token=cfg.hf_token()), timeout=cfg.timeout, follow_redirects=True)
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


# -------------------------------------------------------------------------- cache

def _scan_cache() -> Any:
    root = hf_cache_dir()
    if not root.is_dir():
        return None
    from huggingface_hub import scan_cache_dir

    try:
        return scan_cache_dir(root)
    except Exception:  # noqa: BLE001 - a missing/corrupt cache is no result, not an error
        return None


def _best_snapshot(repo: Any) -> Any:
    revs = list(repo.revisions)
    if not revs:
        return None
    for r in revs:
        if "main" in r.refs:
            return r
    return max(revs, key=lambda r: r.last_modified)


def _cached_details(repo_id: str, revision: str | None) -> ModelDetails | None:
    info = _scan_cache()
    repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id), None) if info else None
    if repo is None:
        return None
    snap = None
    if revision:
        snap = next((r for r in repo.revisions if r.commit_hash == revision or revision in r.refs), None)
    snap = snap or _best_snapshot(repo)
    if snap is None or not (Path(snap.snapshot_path) / "config.json").is_file():
        return None
    return local_details(snap.snapshot_path, model=repo_id, source="hf-cache", revision=snap.commit_hash)


# ------------------------------------------------------------------------ errors

def _download_error(exc: BaseException, ref: ModelRef, cfg: HubConfig) -> EzError:
    name = type(exc).__name__
    repo_id, revision, text = ref.id, ref.revision, first_line(exc)
    if name == "GatedRepoError":
        if not cfg.hf_token():
            return EzError(f"{repo_id} is a gated model and no token is set",
                           hint="accept its terms on the hub, then export HF_TOKEN=<your token>")
        return EzError(f"{repo_id} is gated and your token has no access", hint="accept the model's terms on the hub with this account")
    if name == "RepositoryNotFoundError":
        return EzError(f"model {repo_id} not found on the hub (or it is private)",
                       hint="check the id; for private models export HF_TOKEN")
    if name == "RevisionNotFoundError":
        return EzError(f"revision {revision} of {repo_id} not found")
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
        return EzError(f"a file of {repo_id} was not found on the hub: {text}")
    if name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError"):
        return EzError(f"cannot download {repo_id}: offline or the hub is unreachable ({text})",
                       hint="check the network, HF_ENDPOINT, or pack a local folder instead")
    return EzError(f"downloading {repo_id} failed: {text}",
                   hint="check the network or HF_ENDPOINT; run again to resume")
