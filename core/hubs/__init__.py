"""Where models come from: Hugging Face, ModelScope and folders on this machine.

A :class:`ModelRef` (source, id, revision) names a model from search through
plan to pack; :class:`HubConfig` holds the endpoints, token and timeout;
:func:`hub_for` gives the :class:`~ezrunner.core.hubs.base.Hub` of a source and
:func:`fetch` puts a model on this machine for ``pack``.

No hub library is imported by importing this package.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ezrunner.core.errors import UsageError
from ezrunner.core.hubs.base import (
    SOURCES,
    Check,
    Download,
    FetchedModel,
    Hub,
    HubConfig,
    ModelDetails,
    ModelRef,
    SearchResult,
    Source,
    validate_repo_id,
    validate_revision,
)

__all__ = [
    "SOURCES", "FetchedModel", "Hub", "HubConfig", "ModelDetails", "ModelRef", "SearchResult", "Source",
    "fetch", "hub_for", "parse_model_ref", "validate_repo_id", "validate_revision",
]

_HUBS: dict[str, Hub] = {}
MS_PREFIXES = ("modelscope://", "ms://", "modelscope:", "ms:")  # the longer first
_LOOSE_ID = re.compile(r"[\w.\-]+(/[\w.\-]+)?")


def hub_for(source: str) -> Hub:
    """The hub of ``source`` (``hf``, ``modelscope`` or ``local``)."""
    if not _HUBS:
        from ezrunner.core.hubs.hf import HfHub
        from ezrunner.core.hubs.local import LocalHub
        from ezrunner.core.hubs.modelscope import ModelScopeHub

        _HUBS.update(hf=HfHub(), modelscope=ModelScopeHub(), local=LocalHub())
    try:
        return _HUBS[source]
    except KeyError:
        raise UsageError(f"--source: unknown source {source!r}", hint="choose hf, modelscope or local") from None


def parse_model_ref(text: str | os.PathLike[str] | ModelRef, source: str = "auto", revision: str | None = None) -> ModelRef:
    """A folder path, ``OWNER/NAME`` (Hugging Face unless ``source`` says otherwise)
    or ``modelscope:OWNER/NAME`` / ``ms:OWNER/NAME``. Bad input is a UsageError naming it."""
    if isinstance(text, ModelRef):
        return text if revision is None else ModelRef(text.source, text.id, revision)
    text = os.fspath(text).strip()
    if not text:
        raise UsageError("no model given", hint="give a hub id such as Qwen/Qwen2.5-0.5B-Instruct or a folder path")
    for prefix in MS_PREFIXES:
        if text.lower().startswith(prefix):
            text, source = text[len(prefix):], "modelscope"
            break
    from ezrunner.core.hubs.local import looks_like_path

    p = Path(text).expanduser()
    if source in ("auto", "local") and p.is_dir():
        return ModelRef("local", str(p.resolve()), revision)
    if source == "local" or (source == "auto" and (looks_like_path(text) or p.exists())):
        if p.exists() and not p.is_dir():
            raise UsageError(f"{text}: not a folder", hint="give the model folder (the one holding config.json)")
        raise UsageError(f"model folder not found: {text}", hint="check the path; hub ids look like OWNER/NAME")
    if not _LOOSE_ID.fullmatch(text):
        raise UsageError(f"not a model id or folder: {text!r}", hint="hub ids look like OWNER/NAME; folders need a path such as ./my-model")
    return ModelRef("hf" if source == "auto" else source, text, revision)  # type: ignore[arg-type]


def fetch(ref: ModelRef, cfg: HubConfig | None = None, *, check: Check) -> Download:
    """``fetched = yield from fetch(ref, cfg, check=...)``: a folder as it is, a hub
    model downloaded (progress events on the way). ``check()`` may raise to cancel."""
    return (yield from hub_for(ref.source).download(ref, cfg or HubConfig(), check))
