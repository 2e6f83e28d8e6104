"""What one server process holds: its settings, metrics, admission and the engine as it loads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from .config import LoadError, ServerConfig
from .engine import load_engine
from .metrics import ServerMetrics
from .serving import Admission

log = logging.getLogger("ezrunner_server")

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class ServerState:
    """Kept on ``app.state.server``; the routers reach it through ``routers.deps``."""

    def __init__(self, config: ServerConfig, *, load: bool = True) -> None:
        self.config = config
        self.load_on_start = load
        self.metrics = ServerMetrics()
        self.engine = None
        self.ready = False
        self.draining = False  # SIGTERM came: /ready answers 503 while requests in flight finish
        self.load_error: str | None = None
        self.phase = "starting"
        self.created = int(time.time())
        self.admission: Admission | None = None
        self.on_load_failure: Callable[[str], None] | None = None
        self._thread: threading.Thread | None = None

    @asynccontextmanager
    async def lifespan(self, _app):
        """The application's lifespan: admission opens, the model loads in the background,
        the engine stops on shutdown."""
        self.admission = Admission(self.config.max_concurrency, self.config.max_queue, self.metrics)
        if self.load_on_start:
            self.start_loading()
        try:
            yield
        finally:
            await asyncio.to_thread(self.shutdown)

    def body_limit(self, path: str) -> int:
        """The most bytes a request body to ``path`` may have. For generation it is also bounded
        by the prompt the context can hold: ``max_model_len`` tokens of at most ``max_token_chars``
        characters, each at most 12 bytes of JSON (a ``\\ud83d\\ude00`` pair), plus room for
        one message per token and the other fields. Bigger bodies are refused before they are read."""
        limit = self.config.max_body_bytes
        engine = self.engine
        if path in GENERATION_PATHS and engine is not None and hasattr(engine, "max_token_chars"):
            n = engine.max_model_len
            limit = min(limit, 12 * n * engine.max_token_chars + 256 * n + 64 * 1024)
        return limit

    def start_loading(self) -> None:
        self._thread = threading.Thread(target=self._load, name="ezrunner-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        def progress(msg: str) -> None:
            self.phase = msg
            log.info("%s", msg)

        try:
            log.info("loading %s as %r", self.config.model_dir, self.config.served_model_name)
            t0 = time.perf_counter()
            self.engine = load_engine(self.config, self.metrics, progress)
            self.ready = True
            self.phase = "ready"
            self.metrics.ready.set(1)
            log.info("ready in %.1f s (serving %r)", time.perf_counter() - t0, self.config.served_model_name)
        except LoadError as exc:
            self._failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported, then the process exits
            log.exception("loading the model failed")
            self._failed(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def _failed(self, message: str) -> None:
        self.load_error = message
        self.phase = "failed"
        log.error("cannot serve the model: %s", message)
        if self.on_load_failure is not None:
            self.on_load_failure(message)

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.stop()
