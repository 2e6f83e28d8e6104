"""The app's collaborators: thin, lazy adapters over the core functions.

Nothing here computes a figure of its own: every number the screens show comes
from ``ezrunner.core.discovery``, ``.hardware``, ``.plan``, ``.pack`` and
``.runner``. This module only

* imports those modules lazily (inside the call, which always runs in a worker
  thread), so ``import ezrunner.tui.app`` stays light;
* passes the two injectable seams - the hub endpoint settings (``hub``) and the
  NVML library object (``nvml``) - to the core functions that take them;
* turns results into plain dicts/lists the screens can render.

Tests build ``EzRunnerApp(services=Services(hub=..., nvml=...))`` (or
``EzRunnerApp(hub=..., nvml=...)``) and nothing else is replaced.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ezrunner.core.errors import EzError


def as_dict(obj: Any) -> Any:
    """A plain-data view of a core result (dataclass, object with to_dict, dict)."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return as_dict(to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` passing only the keyword arguments it accepts (the seams are
    optional in the core API: a core function without an ``nvml`` parameter simply
    does not get one)."""
    accepted = {k: v for k, v in kwargs.items() if v is not None and _accepts(func, k)}
    return func(*args, **accepted)


@dataclass
class SearchOutcome:
    results: list[dict[str, Any]] = field(default_factory=list)
    # one line per source that failed (no network, bad token, ...)
    problems: list[str] = field(default_factory=list)


@dataclass
class Services:
    """Seams: ``hub`` is a mapping of endpoint settings for the hub clients (e.g.
    ``{"HF_ENDPOINT": "http://127.0.0.1:PORT", "MODELSCOPE_DOMAIN": ...}``) that a
    test points at a local replay server; ``nvml`` is the NVML library object the
    hardware probe calls (a fake on a machine without a GPU). ``docker`` is an
    optional docker client factory (None = the core's own ``docker.from_env``)."""

    hub: dict[str, str] | None = None
    nvml: Any = None
    docker: Any = None

    # ---- environment for the hub clients -------------------------------------------------
    def _hub_env(self) -> None:
        for key, value in (self.hub or {}).items():
            os.environ[key] = str(value)

    # ---- discovery ------------------------------------------------------------------------
    def search(self, query: str, sources: Iterable[str], limit: int = 50) -> SearchOutcome:
        from ezrunner.core import discovery

        self._hub_env()
        out = _call(discovery.search, query, sources=list(sources), limit=limit)
        results = getattr(out, "results", out)
        problems = list(getattr(out, "problems", None) or getattr(out, "errors", None) or [])
        return SearchOutcome(
            results=[as_dict(r) for r in results or []],
            problems=[p if isinstance(p, str) else _problem_line(p) for p in problems],
        )

    def model_details(self, model: str) -> dict[str, Any]:
        from ezrunner.core import discovery

        self._hub_env()
        return as_dict(_call(discovery.model_details, model))

    # ---- hardware -------------------------------------------------------------------------
    def probe(self) -> dict[str, Any]:
        from ezrunner.core import hardware

        return as_dict(_call(hardware.probe, nvml=self.nvml))

    def presets(self) -> list[str]:
        from ezrunner.core import hardware

        presets = getattr(hardware, "PRESETS", None)
        if presets is None and hasattr(hardware, "presets"):
            presets = hardware.presets()
        return list(presets or [])

    def profile_from_preset(self, preset: str, count: int) -> Any:
        from ezrunner.core import hardware

        return _call(hardware.preset_profile, preset, gpu_count=count)

    def manual_profile(self, **fields: Any) -> Any:
        from ezrunner.core import hardware

        return _call(hardware.manual_profile, **fields)

    def load_profile(self, path: str) -> Any:
        from ezrunner.core import hardware

        return hardware.load_profile(path)

    # ---- plan -----------------------------------------------------------------------------
    def make_plan(self, details: Any, profile: Any, **options: Any) -> dict[str, Any]:
        from ezrunner.core import plan

        self._hub_env()
        result = _call(plan.make_plan, details, profile, **options)
        return as_dict(result)

    # ---- pack -----------------------------------------------------------------------------
    def pack(self, on_event: Callable[[Any], None], cancelled: Callable[[], bool], **options: Any) -> Any:
        """Run ``core.pack.pack``; events go to ``on_event``; ``cancelled()`` is polled
        between events (the core cleans up its temporaries when the generator closes)."""
        from ezrunner.core import pack as pack_mod

        self._hub_env()
        result = _call(pack_mod.pack, on_event=on_event, cancelled=cancelled, **options)
        if inspect.isgenerator(result):
            try:
                final = None
                for event in result:
                    on_event(event)
                    final = event
                    if cancelled():
                        raise _Cancelled()
                return final
            finally:
                result.close()
        return result

    # ---- run ------------------------------------------------------------------------------
    def runner(self) -> Any:
        from ezrunner.core import runner

        return runner


class _Cancelled(EzError):
    def __init__(self) -> None:
        super().__init__("cancelled by the operator")


Cancelled = _Cancelled


def _problem_line(problem: Any) -> str:
    source = getattr(problem, "source", "") or ""
    message = getattr(problem, "message", "") or str(problem)
    return f"{source}: {message}" if source else message


def iter_events(events: Iterable[Any]) -> Iterator[Any]:
    yield from events
