"""The app's collaborators: thin, lazy adapters over the core functions.

Nothing here computes a figure of its own: every number the screens show comes
from ``ezrunner.core.discovery`` / ``ezrunner.core.hubs`` (search, details),
``ezrunner.core.hardware`` (probe, presets, profiles), ``ezrunner.core.plan``,
``ezrunner.core.pack`` and ``ezrunner.core.run`` (verify, load, start, ready,
logs, ps, stop). This module only

* imports those modules lazily (inside the call, which always runs in a worker
  thread), so ``import ezrunner.tui.app`` stays light;
* passes the injectable seams - the hub endpoint settings (``hub``), the NVML
  library object (``nvml``) and the docker client (``docker``) - to the core
  functions that take them.

What the core returns is handed to the screens as it is: ``SearchResult``,
``ModelDetails``, ``HardwareProfile``, ``Plan``, ``PackResult``, ``PsRow``...

Tests build ``EzRunnerApp(hub={"hf": URL, "modelscope": URL}, nvml=FAKE)`` and
nothing else is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ezrunner.core.errors import EzError

if TYPE_CHECKING:
    from ezrunner.core.hardware import HardwareProfile
    from ezrunner.core.hubs import HubConfig, ModelDetails, ModelRef, SearchResult
    from ezrunner.core.pack import PackOptions, PackResult
    from ezrunner.core.plan import Plan, PlanOptions
    from ezrunner.core.run import PsRow


@dataclass
class SearchOutcome:
    results: list[SearchResult] = field(default_factory=list)
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

    # ---- discovery (ezrunner.core.discovery, ezrunner.core.hubs) ----------------------------
    def hub_config(self) -> HubConfig:
        """The core ``HubConfig`` of the ``hub`` seam (None fields: the environment's)."""
        from ezrunner.core.hubs import HubConfig

        hub = self.hub or {}
        timeout = {"timeout": float(hub["timeout"])} if hub.get("timeout") else {}
        return HubConfig(hf_endpoint=hub.get("hf") or None, ms_endpoint=hub.get("modelscope") or None, **timeout)

    def search(self, query: str, sources: Iterable[str], limit: int = 30) -> SearchOutcome:
        """The core's ``SearchResult`` rows, and one line per source that failed."""
        from ezrunner.core import discovery

        out = discovery.search(query, list(sources), limit, cfg=self.hub_config())
        return SearchOutcome(
            results=list(out.results),
            problems=[f"{source}: {reason}" for source, reason in out.errors.items()],
        )

    def model_details(self, model: ModelRef | str) -> ModelDetails:
        """The core ``ModelDetails`` of ``model`` (a ``ModelRef``, or text: a folder or hub id)."""
        from ezrunner.core import discovery

        return discovery.model_details(model, cfg=self.hub_config())

    # ---- hardware (ezrunner.core.hardware) --------------------------------------------------
    def probe(self) -> HardwareProfile:
        """This machine's ``HardwareProfile`` (NVML through the ``nvml`` seam)."""
        from ezrunner.core import hardware

        return hardware.probe(nvml=self.nvml)

    def presets(self) -> list[str]:
        from ezrunner.core import hardware

        return list(hardware.preset_names())

    def profile_from_preset(self, preset: str, count: int) -> HardwareProfile:
        from ezrunner.core import hardware

        return hardware.preset_profile(preset, count)

    def manual_profile(
        self, *, gpu_count: int, gpu_memory_gib: float | None, compute_capability: str | None, ram_gib: float | None
    ) -> HardwareProfile:
        from ezrunner.core import hardware

        return hardware.manual_profile(
            gpu_count=gpu_count, gpu_memory_gib=gpu_memory_gib, compute_capability=compute_capability, ram_gib=ram_gib
        )

    def load_profile(self, path: str) -> HardwareProfile:
        from ezrunner.core import hardware

        return hardware.load_profile(path)

    # ---- plan (ezrunner.core.plan) ----------------------------------------------------------
    def make_plan(self, details: ModelDetails | ModelRef, profile: HardwareProfile, options: PlanOptions) -> Plan:
        """The core ``Plan`` for ``details`` on ``profile``."""
        from ezrunner.core import plan

        return plan.make_plan(details, profile, options)

    # ---- pack (ezrunner.core.pack) ----------------------------------------------------------
    def pack(self, options: PackOptions, on_event: Callable[[Any], None], cancelled: Callable[[], bool]) -> PackResult:
        """``core.pack.pack`` of ``options`` with this app's hub settings and docker
        client: events go to ``on_event``; ``cancelled()`` is polled by the core,
        which removes its temporaries when it stops."""
        from ezrunner.core import pack as pack_mod

        options = replace(
            options,
            hub=options.hub or self.hub_config(),
            client=options.client or (self.docker_client() if self.docker is not None else None),
            cancelled=cancelled,
        )
        try:
            return pack_mod.pack(options, on_event=on_event)
        except pack_mod.PackCancelled as exc:
            raise Cancelled() from exc

    # ---- run (ezrunner.core.run) ------------------------------------------------------------
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
        """``(BundleSource, BundleInfo)`` of a checked bundle."""
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

    def ps(self) -> list[PsRow]:
        """``core.run.ps``: the ``PsRow`` objects."""
        from ezrunner.core import run

        return run.ps(self.docker_client())

    def stop(self, name: str, *, remove: bool = True) -> str:
        from ezrunner.core import run

        return run.stop(self.docker_client(), name, remove=remove)


class Cancelled(EzError):
    def __init__(self) -> None:
        super().__init__("cancelled by the operator; temporaries removed")
