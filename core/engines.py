"""The engine table: one row per (engine, device) that ezrunner can pack and run.

Everything that differs between engines lives in its :class:`EngineSpec` row:
the Dockerfile template, the default base image, the ready path, the API-key
variable, the health check, how long a start may take, and how the serve
command line is built from a plan. Pack, run and the plan's messages look the
row up; none of them branches on an engine's name. Adding an engine (vLLM-CPU,
llama.cpp) means adding a row here and a template under ``images/templates/``.

Pure Python, nothing heavy imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ezrunner.core.errors import UsageError

CONTAINER_PORT = 8000
MODELS_ROOT = "/models"
CONTAINER_UID = 10001
VENV_PYTHON = "/opt/ezrunner/venv/bin/python"
# The server's home (HF_HOME, caches) and /tmp: all an engine writes at run time.
WRITABLE_PATHS = ("/tmp", "/home/ezrunner")
# The CUDA Transformers template takes CPython 3.11 from this image.
CUDA_PYTHON_IMAGE = "python:3.11-slim-bookworm"
# The embedded server's waiting gauge (images/server/metrics.py) and its drain variable (images/server/drain.py).
EMBEDDED_WAITING_METRIC = "ezrunner_requests_waiting"
EMBEDDED_DRAIN_ENV = "EZRUNNER_DRAIN_TIMEOUT"


def model_dir_in_image(served_model_name: str) -> str:
    """Where the model lies inside the image: ``/models/<served-model-name>``."""
    return f"{MODELS_ROOT}/{served_model_name}"


@dataclass(frozen=True)
class ServeRequest:
    """What a serve command line is built from."""

    served_name: str
    plan: dict[str, Any]
    max_model_len: int | None = None
    trust_remote_code: bool = False  # the model's own Python code may run (pack --trust-remote-code)

    @property
    def model_dir(self) -> str:
        return model_dir_in_image(self.served_name)


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def transformers_argv(device: str) -> Callable[[ServeRequest], list[str]]:
    """The embedded server's command line (``python -m ezrunner_server``)."""

    def build(req: ServeRequest) -> list[str]:
        args = [VENV_PYTHON, "-m", "ezrunner_server", req.model_dir, "--host", "0.0.0.0",
                "--port", str(CONTAINER_PORT), "--served-model-name", req.served_name, "--device", device]
        mml = _positive(req.max_model_len) or _positive(req.plan.get("max_model_len"))
        if mml:
            args += ["--max-model-len", str(mml)]
        conc = _positive(req.plan.get("max_concurrent_sequences"))
        if conc:
            args += ["--max-concurrency", str(conc)]
        return args + _remote_code_flag(req)

    return build


def vllm_argv(req: ServeRequest) -> list[str]:
    """``vllm serve`` with the plan mapped by ``images/vllm_args.py``."""
    from ezrunner.images.vllm_args import vllm_serve_args

    plan = dict(req.plan)
    if req.max_model_len:
        plan["max_model_len"] = req.max_model_len
    return vllm_serve_args(plan, model_dir=req.model_dir, served_model_name=req.served_name) + _remote_code_flag(req)


def _remote_code_flag(req: ServeRequest) -> list[str]:
    """Both engines spell it the same way."""
    return ["--trust-remote-code"] if req.trust_remote_code else []


@dataclass(frozen=True)
class EngineSpec:
    """One packable engine on one device."""

    engine: str
    device: str
    template: str  # under images/templates/
    default_base_image: str
    ready_path: str
    api_key_env: str
    start_period_s: int  # the image health check's start period
    ready_base_s: float  # `run` waits this long for start-up, plus the weights at 25 MB/s
    healthcheck_python: str  # the interpreter the health check runs
    serve_argv: Callable[[ServeRequest], list[str]]
    uses_wheelhouse: bool = False  # the embedded server's Python wheels go in
    extra_images: tuple[str, ...] = ()  # other local images the template copies from
    clear_entrypoint: bool = False  # the base image's ENTRYPOINT would wrap our Cmd
    # Where the engine writes at run time. Non-empty: `run` makes the root
    # filesystem read-only and mounts a tmpfs at each of these. Empty: the engine
    # has not been checked with a read-only root, which stays writable.
    writable_paths: tuple[str, ...] = ()
    health_path: str = "/health"  # 200 while the process lives (a liveness probe)
    waiting_metric: str = ""  # the Prometheus gauge of requests waiting for the engine
    drain_env: str = ""  # the variable that sets the server's own drain on SIGTERM (seconds); "" if none

    @property
    def key(self) -> str:
        return f"{self.engine}-{self.device}"

    @property
    def needs_gpu(self) -> bool:
        return self.device == "cuda"

    def healthcheck(self) -> list[str]:
        """The image's ``Healthcheck.Test``: GET the ready path, exit 0 on 200."""
        code = (
            "import sys,urllib.request; "
            f"r=urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}{self.ready_path}',timeout=4); "
            "sys.exit(0 if r.status==200 else 1)"
        )
        return ["CMD", self.healthcheck_python, "-c", code]


ENGINE_TABLE: tuple[EngineSpec, ...] = (
    EngineSpec(
        engine="transformers", device="cpu", template="transformers-cpu.Dockerfile.j2",
        default_base_image="python:3.11-slim-bookworm", ready_path="/ready", api_key_env="EZRUNNER_API_KEY",
        start_period_s=600, ready_base_s=120.0, healthcheck_python=VENV_PYTHON,
        serve_argv=transformers_argv("cpu"), uses_wheelhouse=True, writable_paths=WRITABLE_PATHS,
        waiting_metric=EMBEDDED_WAITING_METRIC, drain_env=EMBEDDED_DRAIN_ENV,
    ),
    EngineSpec(
        engine="transformers", device="cuda", template="transformers-cuda.Dockerfile.j2",
        default_base_image="nvidia/cuda:12.8.1-runtime-ubuntu24.04", ready_path="/ready",
        api_key_env="EZRUNNER_API_KEY", start_period_s=600, ready_base_s=120.0, healthcheck_python=VENV_PYTHON,
        serve_argv=transformers_argv("cuda"), uses_wheelhouse=True, extra_images=(CUDA_PYTHON_IMAGE,),
        writable_paths=WRITABLE_PATHS, waiting_metric=EMBEDDED_WAITING_METRIC, drain_env=EMBEDDED_DRAIN_ENV,
    ),
    EngineSpec(
        engine="vllm", device="cuda", template="vllm.Dockerfile.j2",
        default_base_image="vllm/vllm-openai:v0.11.0", ready_path="/health", api_key_env="VLLM_API_KEY",
        start_period_s=1200, ready_base_s=300.0, healthcheck_python="python3",
        serve_argv=vllm_argv, clear_entrypoint=True, waiting_metric="vllm:num_requests_waiting",
    ),
)

ENGINES: tuple[str, ...] = tuple(dict.fromkeys(s.engine for s in ENGINE_TABLE))
DEVICES: tuple[str, ...] = tuple(dict.fromkeys(s.device for s in ENGINE_TABLE))


def find_spec(engine: str, device: str) -> EngineSpec | None:
    return next((s for s in ENGINE_TABLE if (s.engine, s.device) == (engine, device)), None)


def get_spec(engine: str, device: str) -> EngineSpec:
    """The row for ``engine`` on ``device``; a :class:`UsageError` naming what exists."""
    if engine not in ENGINES:
        raise UsageError(f"--engine: unknown engine {engine!r}", hint=f"auto, {', '.join(ENGINES)}")
    spec = find_spec(engine, device)
    if spec is None:
        devices = ", ".join(s.device for s in ENGINE_TABLE if s.engine == engine)
        raise UsageError(f"--engine {engine}: no image for device {device}", hint=f"{engine} runs on: {devices}")
    return spec


def default_device(engine: str) -> str:
    """The device an engine runs on when nothing else says (its first row)."""
    return next(s.device for s in ENGINE_TABLE if s.engine == engine)

