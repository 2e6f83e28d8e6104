"""Model discovery across hubs: search Hugging Face, ModelScope, local folders and
the local caches at once; and the details of one model (weights, format,
architecture, parameters, context length, gated status, remote code, revision).

Each hub lives in ``ezrunner.core.hubs``; this module is the cross-hub facade.
Remote sources run concurrently with a deadline each and a quick TCP
reachability check first, so with no network each fails fast with a one-line
reason while the local results still come back. Endpoints and tokens come from a
:class:`HubConfig` (read at call time from ``HF_ENDPOINT`` / ``HF_TOKEN`` /
``MODELSCOPE_ENDPOINT`` when not given).

No hub library is imported at module level.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ezrunner.core.errors import UsageError
from ezrunner.core.hubs import SOURCES, HubConfig, ModelRef, hub_for, parse_model_ref
from ezrunner.core.hubs.base import ModelDetails, SearchResult
from ezrunner.core.hubs.local import local_details
from ezrunner.core.hubs.net import CONNECT_TIMEOUT, one_line_reason
from ezrunner.core.relay import ThreadRelay

__all__ = ["SOURCES", "HubConfig", "ModelDetails", "ModelRef", "SearchOutcome", "SearchResult", "local_details",
           "model_details", "search"]


@dataclass
class SearchOutcome:
    results: list[SearchResult]
    errors: dict[str, str] = field(default_factory=dict)  # source -> one-line reason

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "errors": dict(self.errors)}


def search(query: str, sources: Iterable[str] = SOURCES, limit: int = 20, *, cfg: HubConfig | None = None) -> SearchOutcome:
    """Search the given sources (``hf``, ``modelscope``, ``local``; ``all`` = every one).
    Remote sources run concurrently; each failure becomes one line in ``errors``."""
    wanted = _normalise_sources(sources)
    if limit < 1:
        raise UsageError(f"--limit: must be at least 1, got {limit}")
    cfg = cfg or HubConfig()
    deadline = time.monotonic() + cfg.timeout + CONNECT_TIMEOUT + 1
    remote = {
        name: ThreadRelay(lambda _put, _stop, hub=hub_for(name): hub.search(query, limit, cfg),
                          name=f"ezrunner-search-{name}").start()
        for name in wanted if name != "local"
    }
    results: list[SearchResult] = []
    errors: dict[str, str] = {}
    if "local" in wanted:
        try:
            results.extend(hub_for("local").search(query, limit, cfg))
        except Exception as exc:  # noqa: BLE001 - an unreadable cache is a reason, not a crash
            errors["local"] = one_line_reason(exc)
    for name, relay in remote.items():
        if not relay.wait(max(0.0, deadline - time.monotonic())):
            errors[name] = f"no answer within {cfg.timeout:g}s"
            continue
        try:
            results.extend(relay.result())
        except Exception as exc:  # noqa: BLE001 - one line per source
            errors[name] = one_line_reason(exc)
    return SearchOutcome(results, errors)


def _normalise_sources(sources: Iterable[str]) -> list[str]:
    if isinstance(sources, str):
        sources = [sources]
    out: list[str] = []
    for s in sources:
        s = s.strip().lower()
        if s == "all":
            return list(SOURCES)
        s = {"ms": "modelscope", "huggingface": "hf"}.get(s, s)
        if s not in SOURCES:
            raise UsageError(f"--source: unknown source {s!r}", hint="choose hf, modelscope, local or all")
        if s not in out:
            out.append(s)
    return out


def model_details(model: ModelRef | str | os.PathLike[str], revision: str | None = None, *,
                  source: str = "auto", cfg: HubConfig | None = None) -> ModelDetails:
    """Details of one model: a :class:`ModelRef`, or text that
    :func:`~ezrunner.core.hubs.parse_model_ref` reads (a local folder, a Hugging Face
    id, a ModelScope id with ``source="modelscope"`` or an ``ms:`` prefix). Bad
    input raises :class:`UsageError` (exit 2) naming it."""
    ref = parse_model_ref(model, source, revision)
    return hub_for(ref.source).details(ref, cfg or HubConfig())
