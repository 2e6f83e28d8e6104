"""The app's collaborators: thin, lazy adapters over the core functions.

Nothing here computes a figure of its own: every number the screens show comes
from ``ezrunner.core.discovery``, ``.hardware``, ``.plan``, ``.pack`` and
``.runner``. This module only

* imports those modules lazily (inside the call, which always runs in a worker
  thread), so ``import ezrunner.tui.app`` stays light;
* passes the two injectable seams - the hub endpoint settings (``hub``) and the
  NVML library object (``nvml``) - to the core functions that take them;
* turns results into plain dicts/lists the screens can render.

Tests build ``EzRunnerApp(hub={"hf": URL, "modelscope": URL}, nvml=FAKE)`` and
nothing else is replaced.
"""

from __future__ import annotations

import dataclasses
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


@dataclass
class SearchOutcome:
    results: list[dict[str, Any]] = field(default_factory=list)
    # one line per source that failed (no network, bad token, ...)
    problems: list[str] = field(default_factory=list)


@dataclass
class Services:
    """Seams: ``hub`` maps ``"hf"``/``"modelscope"`` to the hub endpoints (and an
    optional ``"timeout"``) that a test points at a local replay server (None: the
    core's defaults, HF_ENDPOINT etc.); ``nvml`` is the NVML library object the
    hardware probe calls (a fake on a machine without a GPU). ``docker`` is an
    optional docker client factory (None = the core's own ``docker.from_env``)."""

    hub: dict[str, str] | None = None
    nvml: Any = None
    docker: Any = None
    _docker_client: Any = field(default=None, repr=False)

    # ---- discovery (ezrunner.core.discovery) -----------------------------------------------
    def hub_config(self) -> Any:
        """The core ``HubConfig`` of the ``hub`` seam (None fields: the environment's)."""
        from ezrunner.core.hubs import HubConfig

        hub = self.hub or {}
        timeout = {"timeout": float(hub["timeout"])} if hub.get("timeout") else {}
        return HubConfig(hf_endpoint=hub.get("hf") or None, ms_endpoint=hub.get("modelscope") or None, **timeout)

    def search(self, query: str, sources: Iterable[str], limit: int = 30) -> SearchOutcome:
        """Rows as dicts for the table, each with its ``ref`` (the ``ModelRef`` a pick means)."""
        from ezrunner.core import discovery

        out = discovery.search(query, list(sources), limit, cfg=self.hub_config())
        return SearchOutcome(
            results=[{**as_dict(r), "ref": _ref_of(r)} for r in out.results],
            problems=[f"{source}: {reason}" for source, reason in out.errors.items()],
        )

    def model_details(self, model: Any) -> Any:
        """The core ``ModelDetails`` of ``model`` (a ``ModelRef``, or text: a folder or
        hub id); ``as_dict`` gives what the screens show."""
        from ezrunner.core import discovery

        return discovery.model_details(model, cfg=self.hub_config())

    # ---- hardware -------------------------------------------------------------------------
    def probe(self) -> Any:
        """This machine's ``HardwareProfile`` (NVML through the ``nvml`` seam)."""
        from ezrunner.core import hardware

        return hardware.probe(nvml=self.nvml)

    def presets(self) -> list[str]:
        from ezrunner.core import hardware

        return list(hardware.preset_names())

    def profile_from_preset(self, preset: str, count: int) -> Any:
        from ezrunner.core import hardware

        return hardware.preset_profile(preset, count)

    def manual_profile(
        self, *, gpu_count: int, gpu_memory_gib: float | None, compute_capability: str | None, ram_gib: float | None
    ) -> Any:
        from ezrunner.core import hardware

        return hardware.manual_profile(
            gpu_count=gpu_count, gpu_memory_gib=gpu_memory_gib, compute_capability=compute_capability, ram_gib=ram_gib
        )

    def load_profile(self, path: str) -> Any:
        from ezrunner.core import hardware

        return hardware.load_profile(path)

    # ---- plan (ezrunner.core.plan, issue 3) ------------------------------------------------------
    def make_plan(self, details: Any, profile: Any, **options: Any) -> Any:
        """The core ``Plan`` for ``details`` (a ModelDetails) on ``profile``."""
        from ezrunner.core import plan

        return plan.make_plan(details, profile, **options)

    def plan_rows(self, plan_obj: Any) -> list[tuple[str, str]]:
        from ezrunner.core import plan

        return plan.plan_rows(plan_obj)

    # ---- pack (ezrunner.core.pack, issue 5) --------------------------------------------------------
    def pack(self, on_event: Callable[[Any], None], cancelled: Callable[[], bool], **options: Any) -> Any:
        """``core.pack.pack``: events go to ``on_event``; ``cancelled()`` is polled by
        the core, which removes its temporaries when it stops."""
        from ezrunner.core import pack as pack_mod

        options = {k: v for k, v in options.items() if v is not None}
        options.setdefault("hub", self.hub_config())
        if self.docker is not None and "client" not in options:
            options["client"] = self.docker_client()
        try:
            return pack_mod.pack(pack_mod.PackOptions(**options, cancelled=cancelled), on_event=on_event)
        except pack_mod.PackCancelled as exc:
            raise _Cancelled() from exc

    # ---- run (ezrunner.core.run) -------------------------------------------------------------------
    def docker_client(self) -> Any:
        """The docker client: the injected one, else ``docker_api.connect()`` (an
        EzError with a hint when the engine is down). Cached."""
        if self._docker_client is None:
            if self.docker is not None:
                self._docker_client = self.docker() if callable(self.docker) else self.docker
            else:
                from ezrunner.core import docker_api

                self._docker_client = docker_api.connect()
        return self._docker_client

    def verify(self, bundle: str, on_event: Callable[[Any], None], *, check_hash: bool = True) -> tuple[Any, Any]:
        from ezrunner.core.bundle.reader import verify_bundle

        return verify_bundle(bundle, on_event, check_hash=check_hash)

    def load(self, source: Any, info: Any, on_event: Callable[[Any], None]) -> Any:
        from ezrunner.core import run

        return run.load_bundle(self.docker_client(), source, info, on_event)

    def start(self, image: Any, on_event: Callable[[Any], None], options: Any) -> Any:
        """``core.run.start`` with the screen's ``StartOptions`` (``gpus`` as typed)."""
        from ezrunner.core import run

        return run.start(self.docker_client(), image, options, on_event=on_event)

    def attach(self, name: str) -> Any:
        """The ``Running`` of a container ezrunner started earlier (``ezrunner ps``)."""
        from ezrunner.core import run

        return run.running_from_container(run.get_managed(self.docker_client(), name))

    def wait_ready(self, running: Any, on_event: Callable[[Any], None]) -> Any:
        from ezrunner.core import run

        return run.wait_ready(self.docker_client(), running, on_event=on_event)

    def logs(self, name: str, *, stop_event: Any = None, tail: int = 200) -> Iterator[tuple[str, ...]]:
        from ezrunner.core import run

        container = run.get_managed(self.docker_client(), name)
        yield from run.follow_logs(container, follow=True, tail=tail, stop_event=stop_event)

    def ps(self) -> list[Any]:
        """``core.run.ps``: the ``PsRow`` objects."""
        from ezrunner.core import run

        return run.ps(self.docker_client())

    def stop(self, name: str, *, remove: bool = True) -> str:
        from ezrunner.core import run

        return run.stop(self.docker_client(), name, remove=remove)


class _Cancelled(EzError):
    def __init__(self) -> None:
        super().__init__("cancelled by the operator; temporaries removed")


Cancelled = _Cancelled


def _ref_of(result: Any) -> Any:
    """``result.ref``, or None for an id the hub allows but a ModelRef does not."""
    try:
        return result.ref
    except EzError:
        return None


def _problem_line(problem: Any) -> str:
    source = getattr(problem, "source", "") or ""
    message = getattr(problem, "message", "") or str(problem)
    return f"{source}: {message}" if source else message

