"""``ezrunner pack``: model + engine image -> one offline docker-archive bundle.

The pack is a sequence of small steps, each a generator of
:mod:`ezrunner.core.events` that returns its result
(``source = yield from _download(opts)``):

1. **download** - a hub id is fetched (safetensors only when present) into the
   ezrunner cache; a local folder is used as is.
2. **plan** - the plan (``ezrunner.core.plan``) decides engine and device unless the
   caller passes one; a plan that does not fit stops here without ``yes=True``.
3. **build** - the engine image (:mod:`ezrunner.core.engine_image`), built once per
   engine and cached, its layers exported once into the ezrunner cache.
4. **export** - the bundle is written in one pass by
   :class:`ezrunner.core.bundle.writer.BundleWriter` on a worker thread
   (:func:`ezrunner.core.relay.relay`): temporary names, renamed when complete;
   the sidecar last.

Public entry points: :class:`PackOptions` (every choice, checked in one place by
:meth:`PackOptions.validated`), :func:`iter_pack` (``result = yield from
iter_pack(options)``: the events, then the :class:`PackResult`) and :func:`pack`
(callback style, returns the :class:`PackResult`).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ezrunner.core import docker_api, hubs
from ezrunner.core import events as ev
from ezrunner.core.bundle import format as B
from ezrunner.core.bundle.writer import BundleContents, BundleWriter, WrittenBundle
from ezrunner.core.engine_image import (
    EngineExport,
    EngineImage,
    ensure_engine_image,
    export_engine,
    validate_image_ref,
)
from ezrunner.core.engines import (
    DEVICES,
    ENGINES,
    EngineSpec,
    ServeRequest,
    default_device,
    get_spec,
)
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.relay import relay
from ezrunner.core.units import human_bytes

from ezrunner._version import __version__

# --------------------------------------------------------------------------- names


def served_name_for(model: str) -> str:
    """The served model name (and image repo) for a model id or folder:
    its last path component, lowercased, limited to ``[a-z0-9._-]``."""
    base = model.rstrip("/").rsplit("/", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("._-")
    base = re.sub(r"[._-]{2,}", "-", base)
    return (base or "model")[:64]




# --------------------------------------------------------------------------- options and result


@dataclass
class PackOptions:
    """Everything a pack is asked to do. :meth:`validated` checks it (in one place,
    before anything is reported or written); ``iter_pack`` calls it."""

    model: str | hubs.ModelRef  # a ModelRef, or text: a hub id (owner/name, modelscope:owner/name) or a folder
    output: str | os.PathLike[str]  # BUNDLE.tar
    plan: Any = None  # a Plan or its dict; None: plan here (``profile``, else this machine)
    profile: Any = None  # the target's HardwareProfile for the plan
    engine: str | None = None  # None or "auto": the plan's engine
    device: str | None = None  # None: the plan's device
    base_image: str | None = None  # None: the engine row's pinned image
    revision: str | None = None
    split_size: int | str | None = None  # bytes or "3.9G"; None: one file
    max_model_len: int | None = None
    dtype: str | None = None
    yes: bool = False  # pack even when the plan says it does not fit
    trust_remote_code: bool = False  # pack a model that ships its own Python code (config.json auto_map)
    token: str | None = None  # hub token
    details: Any = None  # the ModelDetails the plan reads (None: read from the folder)
    client: Any = None  # a docker client (None: connect)
    cancelled: Callable[[], bool] | None = None  # polled; True stops the pack (PackCancelled)
    hub: hubs.HubConfig | None = None  # hub endpoints and token (None: HF_ENDPOINT, HF_TOKEN, ... and ``token``)

    def check(self) -> None:
        """Raise :class:`PackCancelled` once ``cancelled()`` says so."""
        if self.cancelled is not None and self.cancelled():
            raise PackCancelled()

    def validated(self) -> PackOptions:
        """A checked copy: ``engine`` None or a known engine, ``split_size`` bytes
        or None, ``output`` an absolute Path in an existing folder. A bad value is
        a :class:`UsageError` naming the flag."""
        engine = None if self.engine in (None, "", "auto") else self.engine
        if engine is not None and engine not in ENGINES:
            raise UsageError(f"--engine: unknown engine {engine!r}", hint=f"auto, {', '.join(ENGINES)}")
        if self.device is not None and self.device not in DEVICES:
            raise UsageError(f"device: unknown device {self.device!r}")
        if self.base_image is not None:
            validate_image_ref(self.base_image)
        part_size = B.parse_size(self.split_size) if isinstance(self.split_size, str) else self.split_size
        if part_size is not None and part_size < (1 << 20):
            raise UsageError("--split-size: parts must be at least 1M")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int) or self.max_model_len < 1):
            raise UsageError("--max-model-len: must be a positive whole number")
        return replace(self, engine=engine, split_size=part_size, output=_checked_output(self.output))


def _checked_output(output: str | os.PathLike[str]) -> Path:
    target = Path(output).expanduser()
    if target.name in ("", ".", "..") or target.is_dir():
        raise UsageError(f"-o: {output} is a folder; give a file name such as model.tar")
    target = target.parent.resolve() / target.name
    if not target.parent.is_dir():
        raise UsageError(f"-o: folder {target.parent} does not exist")
    return target


@dataclass
class PackResult:
    bundle: str  # path of the joined bundle name (BUNDLE.tar; with parts it does not exist)
    parts: list[str]
    sidecar: str
    sha256: str
    size: int
    image_tag: str
    image_id: str
    engine_image: str
    engine_reused: bool
    manifest: B.BundleManifest
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready; the manifest as in ``ezrunner-bundle.json``)."""
        return {**asdict(self), "manifest": self.manifest.to_dict()}


class PackCancelled(EzError):
    def __init__(self) -> None:
        super().__init__("pack cancelled; temporaries removed", exit_code=130)


@dataclass(frozen=True)
class ModelSource:
    """The downloaded (or local) model."""

    folder: Path
    model_id: str  # for the labels: the hub id, or the folder's name
    revision: str | None  # the resolved commit (None for a folder)


@dataclass(frozen=True)
class Decision:
    """What the plan step chose."""

    plan: dict[str, Any]
    spec: EngineSpec
    base_image: str


# --------------------------------------------------------------------------- the steps


def _download(opts: PackOptions) -> Generator[ev.Event, None, ModelSource]:
    # the model is validated (ModelRef) before anything is reported or written
    ref = hubs.parse_model_ref(opts.model, revision=opts.revision)
    if opts.client is None:  # fail fast, before a long download
        opts.client = docker_api.connect()
    yield ev.PhaseStarted("download", label=f"model {opts.model}")
    fetched = yield from hubs.fetch(ref, opts.hub or hubs.HubConfig(token=opts.token), check=opts.check)
    yield ev.PhaseFinished("download", detail=str(fetched.folder))
    return ModelSource(fetched.folder, fetched.label_id, fetched.ref.revision)


def _plan_for(folder: Path, opts: PackOptions) -> dict[str, Any]:
    """The caller's plan, else ``make_plan`` for the folder (or ``details``) on ``profile``."""
    if opts.plan is not None:
        return dict(opts.plan.to_dict() if hasattr(opts.plan, "to_dict") else opts.plan)
    from ezrunner.core import hardware
    from ezrunner.core import plan as plan_mod

    choices = {"engine": opts.engine, "max_model_len": opts.max_model_len, "dtype": opts.dtype}
    profile = opts.profile if opts.profile is not None else hardware.probe()
    src = opts.details if opts.details is not None else str(folder)
    return plan_mod.make_plan(src, profile, **{k: v for k, v in choices.items() if v is not None}).to_dict()


def needs_remote_code(folder: Path) -> bool:
    """Whether the model's config.json names its own Python code (``auto_map``, at
    the top or in a nested text/vision config): transformers must run that code."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False  # the plan reports an unreadable config
    if not isinstance(cfg, dict):
        return False
    nested = [v for v in cfg.values() if isinstance(v, dict)]
    return any(isinstance(c.get("auto_map"), dict) and c["auto_map"] for c in [cfg, *nested])


def _check_remote_code(opts: PackOptions, source: ModelSource) -> None:
    if needs_remote_code(source.folder) and not opts.trust_remote_code:
        raise UsageError(
            f"{source.model_id} needs its own Python code (config.json has auto_map): a bundle of it starts "
            "only when the engine may run that code",
            hint="read the model's .py files, then pack with --trust-remote-code if you trust them",
        )


def _plan(opts: PackOptions, source: ModelSource) -> Generator[ev.Event, None, Decision]:
    yield ev.PhaseStarted("plan", label="planning engine and memory")
    _check_remote_code(opts, source)
    plan_dict = _plan_for(source.folder, opts)
    if plan_dict.get("fits") is False and not opts.yes:
        reasons = "; ".join(str(r) for r in plan_dict.get("reasons") or [])[:300]
        raise EzError(f"the plan says this model does not fit the target{': ' + reasons if reasons else ''}",
                      hint="pack anyway with --yes, or pick a smaller model / other target")
    engine = opts.engine or plan_dict.get("engine") or "transformers"
    spec = get_spec(engine, opts.device or plan_dict.get("device") or default_device(engine))
    yield ev.PhaseFinished("plan", detail=f"{spec.engine} on {spec.device}", data={"plan": plan_dict})
    return Decision(plan_dict, spec, opts.base_image or spec.default_base_image)


def _engine(opts: PackOptions, decision: Decision) -> Generator[ev.Event, None, tuple[EngineImage, EngineExport]]:
    spec, base_image = decision.spec, decision.base_image
    yield ev.PhaseStarted("build", label=f"engine image: {spec.engine} on {spec.device}, base {base_image}")
    image = yield from ensure_engine_image(opts.client, spec, base_image=base_image, check=opts.check)
    export = yield from export_engine(opts.client, image.image_id, check=opts.check)
    yield ev.PhaseFinished("build", detail=f"engine image {image.tag}",
                           data={"image": image.tag, "id": image.image_id, "reused": image.reused})
    return image, export


def bundle_contents(opts: PackOptions, source: ModelSource, decision: Decision, export: EngineExport) -> BundleContents:
    """What the bundle holds: the model, the manifest's fixed fields, the engine layers."""
    spec = decision.spec
    served = served_name_for(source.model_id)
    manifest = B.BundleManifest(
        model=source.model_id, revision=source.revision, served_model_name=served, engine=spec.engine,
        device=spec.device, plan=decision.plan, image_id="", image_tag="", ezrunner_version=__version__,
        created=B.now_iso(),
    )
    serve_args = spec.serve_argv(ServeRequest(served, decision.plan, opts.max_model_len, opts.trust_remote_code))
    return BundleContents(source.folder, manifest, spec, serve_args, export.config, export.layers, mtime=int(time.time()))


def _export(opts: PackOptions, contents: BundleContents) -> Generator[ev.Event, None, WrittenBundle]:
    """Write the bundle on a worker thread, its events live. Closing the generator,
    Ctrl-C or a cancel stops the worker, which removes its temporaries, before the
    exception goes on."""

    def work(put: Callable[[ev.Event], None], stop: Any) -> WrittenBundle:
        def check() -> None:
            if stop.is_set():
                raise PackCancelled()

        assert isinstance(opts.output, Path) and not isinstance(opts.split_size, str)
        return BundleWriter(contents, opts.output, part_size=opts.split_size, check=check, emit=put).write()

    return (yield from relay(work, name="ezrunner-export", on_idle=opts.check))


# --------------------------------------------------------------------------- the pack


def iter_pack(options: PackOptions) -> Generator[ev.Event, None, PackResult]:
    """The pack as a generator of events that returns the :class:`PackResult`
    (``result = yield from iter_pack(options)``); its last event is
    ``PhaseFinished("export")``. Closing the generator early (or an exception)
    removes every temporary; no file named like a finished bundle is ever left
    incomplete."""
    t0 = time.monotonic()
    opts = options.validated()
    source = yield from _download(opts)
    seconds = {"download": time.monotonic() - t0}
    decision = yield from _plan(opts, source)
    tb = time.monotonic()
    engine, export = yield from _engine(opts, decision)
    seconds["build"] = time.monotonic() - tb
    te = time.monotonic()
    written = yield from _export(opts, bundle_contents(opts, source, decision, export))
    seconds["export"] = time.monotonic() - te
    seconds["total"] = time.monotonic() - t0
    result = PackResult(
        bundle=str(written.bundle), parts=[str(p) for p in written.parts], sidecar=str(written.sidecar),
        sha256=written.sha256, size=written.size, image_tag=written.manifest.image_tag,
        image_id=written.manifest.image_id, engine_image=engine.tag, engine_reused=engine.reused,
        manifest=written.manifest, seconds={k: round(v, 3) for k, v in seconds.items()},
    )
    yield ev.PhaseFinished("export", detail=f"{written.bundle.name}: {human_bytes(result.size)} in {result.seconds['total']:.1f} s")
    return result


def pack(options: PackOptions, *, on_event: ev.EventCallback | None = None) -> PackResult:
    """Callback style: every event goes to ``on_event``; returns the :class:`PackResult`."""
    cb = on_event or ev.ignore
    gen = iter_pack(options)
    try:
        return ev.drive(gen, cb, after=options.check)
    finally:
        gen.close()
