"""Local folders, the local hub caches and the demo model."""

from __future__ import annotations

import os
from pathlib import Path

from ezrunner.core import modelinfo, paramcount
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.hubs.base import (
    Check,
    Download,
    FetchedModel,
    HubConfig,
    ModelDetails,
    ModelRef,
    SearchResult,
)
from ezrunner.core.hubs.net import one_line_reason


def looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", ".\\"))
        or text in (".", "..")
        or text.count("/") >= 2
        or "\\" in text
    )


def local_result(folder: Path, source: str, rid: str | None = None) -> SearchResult:
    files = modelinfo.loadable_weights(modelinfo.inventory(folder))
    size = sum(f.size or 0 for f in files) or None
    return SearchResult(id=rid or str(folder.resolve()), source=source, size_bytes=size, path=str(folder.resolve()))


def local_details(folder: str | os.PathLike[str], *, model: str | None = None, source: str = "local",
                  revision: str | None = None) -> ModelDetails:
    """Details of a model folder on this machine (safetensors headers are read)."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"model folder not found: {folder}")
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
    fill_parameters_from_config(d)


def fill_parameters_from_config(d: ModelDetails) -> None:
    """The parameter count from config.json, counted as the plan counts it
    (:func:`paramcount.config_count`: transformers-meta, else config-estimate)."""
    counted = paramcount.config_count(d.config) if d.config is not None else None
    if counted is None:
        return
    d.parameters, d.parameters_source = counted.total, counted.source
    d.parameters_exact = counted.source == paramcount.TRANSFORMERS_META
    if not d.parameters_exact:
        d.notes.append(f"parameter count for model_type {d.config.model_type!r} is a structural estimate from "
                       "config.json (transformers is not installed or cannot build it)")


class LocalHub:
    """Folders on this machine: a path query, the hub caches and the demo models."""

    source = "local"

    def search(self, query: str, limit: int, cfg: HubConfig | None = None) -> list[SearchResult]:
        """Local folders (when ``query`` is a path), the HF cache, the ModelScope
        cache and the demo models written by ``ezrunner demo-model``."""
        from ezrunner.core.hubs import hub_for

        q = (query or "").strip()
        p = Path(q).expanduser() if q else None
        if p is not None and (looks_like_path(q) or p.is_dir()):
            if p.is_dir() and (p / "config.json").is_file():
                return [local_result(p, "local")]
            if p.is_dir():
                return [local_result(c.parent, "local") for c in sorted(p.glob("*/config.json"))[:limit]]
            return []
        needle = q.lower()
        found = hub_for("hf").cached() + hub_for("modelscope").cached() + self.cached()
        return [r for r in found if needle in r.id.lower()][:limit]

    def details(self, ref: ModelRef, cfg: HubConfig | None = None) -> ModelDetails:
        return local_details(ref.id)

    def download(self, ref: ModelRef, cfg: HubConfig | None, check: Check) -> Download:
        """Nothing to download: the folder itself, checked."""
        p = Path(ref.id).expanduser()
        if not p.is_dir():
            raise UsageError(f"model folder not found: {ref.id}", hint="check the path; hub ids look like OWNER/NAME")
        if ref.revision:
            raise UsageError("--revision applies to hub ids, not to a local folder")
        if not (p / "config.json").is_file():
            raise UsageError(f"{p} has no config.json; not a Hugging Face model folder")
        return FetchedModel(p.resolve(), ModelRef("local", str(p.resolve())))
        yield  # a generator, like the hubs' downloads

    def cached(self) -> list[SearchResult]:
        """The demo models."""
        from ezrunner.core import locations

        root = locations.demo_model_dir()
        if not root.is_dir():
            return []
        return [local_result(c.parent, "local", f"demo-model/{c.parent.name}") for c in sorted(root.glob("*/config.json"))]

