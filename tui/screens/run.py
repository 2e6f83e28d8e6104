"""The run screen: pick a bundle, verify, load, start, watch status and logs
(k9s keys), stop, restart, and see what already runs (``ezrunner ps``)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ezrunner.core.progress import Meter, ProgressState
from ezrunner.tui.format import human_bytes, human_duration
from ezrunner.tui.screens.base import EzScreen
from ezrunner.tui.widgets.log_tail import LogTail
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import (
    DataTable,
    DirectoryTree,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Static,
)

if TYPE_CHECKING:
    from ezrunner.core.bundle.reader import BundleInfo, BundleSource
    from ezrunner.core.run import PsRow, Ready, Running


def is_bundle_name(name: str) -> bool:
    """Bundles (``*.tar``) and the first part of a split bundle (``*.tar.part-001``)."""
    return name.endswith(".tar") or name.endswith(".tar.part-001")


class BundleTree(DirectoryTree):
    """A DirectoryTree showing folders, bundles and first parts only."""

    def filter_paths(self, paths):
        return [p for p in paths if not p.name.startswith(".") and (p.is_dir() or is_bundle_name(p.name))]


class RunScreen(EzScreen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back", id="run.back"),
        Binding("v", "verify", "Verify", id="run.verify"),
        Binding("l", "load", "Load", id="run.load"),
        Binding("g", "start", "Start", id="run.start"),
        Binding("x", "stop", "Stop", id="run.stop"),
        Binding("t", "restart", "Restart", id="run.restart"),
        Binding("c", "chat", "Chat", id="run.chat"),
        Binding("s", "toggle_follow", "Follow", id="run.follow"),
        Binding("w", "toggle_wrap", "Wrap", id="run.wrap"),
        Binding("slash", "filter", "Filter", id="run.filter"),
        Binding("C", "clear_log", "Clear", id="run.clear"),
        Binding("ctrl+s", "save_log", "Save log", id="run.save"),
        Binding("p", "refresh_ps", "Refresh ps", id="run.ps"),
    ]

    class Progress(Message):
        """What the status line and the bar show of a step: ``done`` of ``total``
        bytes (or seconds, ``unit`` "s"), or a notice (``done`` -1)."""

        def __init__(self, phase: str, done: int, total: int | None, text: str = "", unit: str = "bytes") -> None:
            super().__init__()
            self.phase = phase
            self.done = done
            self.total = total
            self.text = text
            self.unit = unit

        @classmethod
        def of(cls, state: ProgressState, event: Any, phase: str) -> RunScreen.Progress:
            """The message for ``event`` once folded into ``state``."""
            from ezrunner.core import events as ev

            if isinstance(event, ev.Notice):
                return cls(phase, -1, None, event.message)
            if isinstance(event, ev.StepProgress):
                # waiting for ready: elapsed seconds of the timeout, and the latest log line
                step = state.steps[event.phase]
                return cls(phase, step.index, step.count, step.name[:60], unit="s")
            item = getattr(event, "item", "")
            meter = state.item(event.phase, item) or state.totals.get(event.phase) or Meter()
            text = event.label if isinstance(event, ev.PhaseStarted) else item
            return cls(phase, meter.done, meter.total, text)

    class StepDone(Message):
        """A step ended (``ok``) or failed; what it produced comes with it."""

        def __init__(
            self,
            step: str,
            ok: bool,
            text: str,
            *,
            verified: tuple[BundleSource, BundleInfo] | None = None,
            image: Any = None,
            running: Running | None = None,
            ready: Ready | None = None,
            restart: bool = False,
        ) -> None:
            super().__init__()
            self.step = step
            self.ok = ok
            self.text = text
            self.verified = verified
            self.image = image
            self.running = running
            self.ready = ready
            self.restart = restart

    class PsListed(Message):
        def __init__(self, rows: list[PsRow] | None, error: str | None) -> None:
            super().__init__()
            self.rows = rows
            self.error = error

    class GpuStats(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, bundle_dir: str | None = None) -> None:
        super().__init__()
        self.bundle_dir = bundle_dir or str(Path.cwd())
        self.bundle: str | None = None
        self.state = "no bundle"
        self.verified: tuple[BundleSource, BundleInfo] | None = None
        self.image: Any = None  # the loaded docker image
        self.running: Running | None = None
        self.ready: Ready | None = None
        self.started_at: float | None = None
        self.gpu_text = ""
        self.docker_problem: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="run-top"):
            yield BundleTree(self.bundle_dir, id="run-tree")
            with Vertical(id="run-side"):
                with Horizontal(classes="opt-row"):
                    yield Label("port ", classes="opt-label")
                    yield Input("8000", id="run-port", restrict=r"[0-9]*", compact=True)
                    yield Label(" host ", classes="opt-label")
                    yield Input("127.0.0.1", id="run-host", compact=True)
                with Horizontal(classes="opt-row"):
                    yield Label("GPUs ", classes="opt-label")
                    yield Input("auto", placeholder="auto", id="run-gpus", compact=True)
                    yield Label(" key  ", classes="opt-label")
                    yield Input("", placeholder="none", password=True, id="run-key", compact=True)
                with Horizontal(classes="opt-row"):
                    yield Label("name ", classes="opt-label")
                    yield Input("", placeholder="from the model", id="run-name", restrict=r"[a-zA-Z0-9_.-]*", compact=True)
                yield ProgressBar(total=None, id="run-bar", show_eta=True, **self._clock())
                yield Static("", id="run-status", markup=False)
        yield DataTable(id="run-ps", cursor_type="row", zebra_stripes=True)
        yield LogTail(max_lines=5000, placeholder="Waiting for logs... (start a bundle)", id="run-log")
        yield Input(placeholder="filter (Enter applies, empty clears)", id="run-filter", compact=True)
        yield Footer()

    def _now(self) -> float:
        clock = getattr(self.app, "clock", None)
        return clock.time if clock is not None else time.monotonic()

    def _clock(self) -> dict[str, Any]:
        clock = getattr(self.app, "clock", None)
        return {"clock": clock} if clock is not None else {}

    def on_mount(self) -> None:
        table = self.query_one("#run-ps", DataTable)
        # fixed widths: they fit 80 columns and do not jump as rows come and go
        for label, width in (("name", 14), ("model", 16), ("engine", 12), ("port", 5), ("state", 12), ("uptime", 6)):
            table.add_column(label, width=width)
        self.query_one("#run-filter").display = False
        self._render_status()
        self.action_refresh_ps()
        self.set_interval(2.0, self._tick)
        self.query_one("#run-tree").focus()

    # ---- status -------------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.running is not None:
            self._render_status()
            self.poll_gpu()

    def _url(self) -> str | None:
        return self.running.base_url if self.running is not None else None

    def _render_status(self) -> None:
        lines = [f"bundle  {self.bundle or '(choose one on the left, Enter)'}", f"state   {self.state}"]
        if self.running is not None:
            uptime = self._now() - self.started_at if self.started_at is not None else None
            lines.append(f"name    {self.running.name}  up {human_duration(uptime)}")
            lines.append(f"URL     {self._url()}")
        if self.gpu_text:
            lines.append(self.gpu_text)
        if self.docker_problem:
            problem = self.docker_problem
            lines.append(f"docker  {problem if len(problem) <= 72 else problem[:71] + '…'}")
        self.query_one("#run-status", Static).update("\n".join(lines))

    def _set_state(self, state: str) -> None:
        self.state = state
        self._render_status()

    @work(thread=True, exclusive=True, group="gpu", exit_on_error=False, description="GPU stats")
    def poll_gpu(self) -> None:
        """Live utilisation and memory from NVML (the app's ``nvml`` seam); silent without one."""
        nvml = self.app.services.nvml
        try:
            if nvml is None:
                import pynvml as nvml  # nvidia-ml-py
            nvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no NVML: no GPU line
            return
        try:
            parts = []
            for i in range(int(nvml.nvmlDeviceGetCount())):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                util = nvml.nvmlDeviceGetUtilizationRates(h)
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                parts.append(f"GPU{i} {util.gpu}% {human_bytes(mem.used)}/{human_bytes(mem.total)}")
            self.post_message(self.GpuStats("GPU     " + "  ".join(parts) if parts else ""))
        except Exception as exc:  # noqa: BLE001
            self.post_message(self.GpuStats(f"GPU     NVML: {exc}"))
        finally:
            try:
                nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass

    def on_run_screen_gpu_stats(self, message: GpuStats) -> None:
        self.gpu_text = message.text
        self._render_status()

    # ---- ps -----------------------------------------------------------------------------------
    def action_refresh_ps(self) -> None:
        self.list_running()

    @work(thread=True, exclusive=True, group="ps", exit_on_error=False, description="ezrunner ps")
    def list_running(self) -> None:
        from ezrunner.tui.app import error_text

        try:
            rows = self.app.services.ps()
        except Exception as exc:  # noqa: BLE001 - Docker down: a line, not a crash
            self.post_message(self.PsListed(None, error_text(exc)[0]))
            return
        self.post_message(self.PsListed(rows, None))

    def on_run_screen_ps_listed(self, message: PsListed) -> None:
        table = self.query_one("#run-ps", DataTable)
        table.clear()
        self.docker_problem = message.error
        self._render_status()
        if message.error:
            table.add_row("(docker)", "unavailable", "", "", "", "")
            return
        for row in message.rows or []:
            table.add_row(row.name or "-", row.model or "-", row.engine or "-", row.port or "-", row.state or "-",
                          row.uptime)
        if not message.rows:
            table.add_row("(none)", "no bundle runs here", "", "", "", "")

    @on(DataTable.RowSelected, "#run-ps")
    def _ps_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        name = str(event.data_table.get_row(event.row_key)[0])
        if name.startswith("("):
            return
        self._set_state(f"attaching to {name}…")
        self.attach(name)

    @work(thread=True, exclusive=True, group="run-step", exit_on_error=False, description="attach")
    def attach(self, name: str) -> None:
        """Take over a bundle that already runs here: its logs, status, stop and chat."""
        from ezrunner.tui.app import error_text

        services = self.app.services
        try:
            running = services.attach(name)
            self.post_message(self.StepDone("started", True, f"attached to {name}, waiting for ready", running=running))
            ready = services.wait_ready(running, self._on_event("ready"))
            self.post_message(self.StepDone("ready", True, "ready", running=running, ready=ready))
        except Exception as exc:  # noqa: BLE001
            self.post_message(self.StepDone("attach", False, error_text(exc)[0]))

    # ---- choose a bundle ----------------------------------------------------------------------
    @on(DirectoryTree.FileSelected, "#run-tree")
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.select_bundle(str(event.path))

    def select_bundle(self, path: str) -> None:
        self.bundle = path
        self.verified = None
        self.image = None
        self._set_state("selected: v verify, l load, g start")

    # ---- verify / load / start ----------------------------------------------------------------
    def _need_bundle(self) -> bool:
        if not self.bundle:
            self.notify("choose a bundle first (Enter on a .tar in the tree)", severity="warning")
            return False
        return True

    def _on_event(self, phase: str):
        """An ``on_event`` callback for the core: the worker folds the events
        (``core.progress``) and posts what to show; log lines go to the log."""
        from ezrunner.core import events as ev

        state = ProgressState()
        last = [0.0]

        def handle(event: ev.Event) -> None:
            now = time.monotonic()
            lines = state.fold(event, now)
            if isinstance(event, ev.LogLines):
                self.app.call_from_thread(self.query_one(LogTail).append_lines, lines)
            if isinstance(event, (ev.LogLines, ev.PhaseFinished)):
                return  # the step's end arrives as StepDone
            message = self.Progress.of(state, event, phase)
            if isinstance(event, ev.BytesProgress):
                finished = message.total is not None and message.done >= message.total
                if now - last[0] < 0.1 and not finished:
                    return
                last[0] = now
            self.post_message(message)

        return handle

    def on_run_screen_progress(self, message: Progress) -> None:
        bar = self.query_one("#run-bar", ProgressBar)
        if message.done >= 0:
            bar.update(total=message.total, progress=message.done)
            if message.unit == "s":
                of = f" of {message.total} s" if message.total else " s"
                self._set_state(f"{message.phase}: {message.done}{of} {message.text}".rstrip())
                return
            of = f" / {human_bytes(message.total)}" if message.total else ""
            self._set_state(f"{message.phase}: {human_bytes(message.done)}{of} {message.text}".rstrip())
        elif message.text:
            self._set_state(f"{message.phase}: {message.text}")

    def action_verify(self) -> None:
        if self._need_bundle():
            self._set_state("verifying…")
            self.run_step("verify", self.bundle)

    def action_load(self) -> None:
        if self._need_bundle():
            self._set_state("loading…")
            self.run_step("load", self.bundle)

    def action_start(self) -> None:
        if not self._need_bundle():
            return
        try:
            options = self.start_options()
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        self._set_state("starting…")
        self.run_step("start", self.bundle, options)

    def start_options(self) -> Any:
        """The form as a ``core.run.StartOptions``."""
        from ezrunner.core.run.container import StartOptions

        port_text = self.query_one("#run-port", Input).value.strip() or "8000"
        port = int(port_text) if port_text.isdigit() else -1
        if not 1 <= port <= 65535:
            raise ValueError("port: must be 1-65535")
        gpus = self.query_one("#run-gpus", Input).value.strip()
        if gpus.lower() in ("", "auto"):
            gpus = None  # follow the bundle: all GPUs when it needs one, none otherwise
        return StartOptions(
            port=port,
            host=self.query_one("#run-host", Input).value.strip() or "127.0.0.1",
            gpus=gpus,
            api_key=self.query_one("#run-key", Input).value.strip() or None,
            name=self.query_one("#run-name", Input).value.strip() or None,
        )

    @work(thread=True, exclusive=True, group="run-step", exit_on_error=False, description="run step")
    def run_step(self, step: str, bundle: str, options: Any = None) -> None:
        """verify -> load -> start -> wait for ready: each step first runs the
        ones before it that have not run yet, as ``ezrunner run`` does."""
        from ezrunner.tui.app import error_text

        services = self.app.services
        current = step
        try:
            verified = self.verified
            if step == "verify" or verified is None:
                current = "verify"
                verified = services.verify(bundle, self._on_event("verify"))
                self.post_message(self.StepDone("verify", True, "verified: checksum and structure match", verified=verified))
            image = self.image
            if step in ("load", "start") and image is None:
                current = "load"
                image = services.load(verified[0], verified[1], self._on_event("load"))
                self.post_message(self.StepDone("load", True, "loaded into Docker", image=image))
            if step == "start":
                current = "start"
                running = services.start(image, self._on_event("start"), replace(options, bundle_name=Path(bundle).name))
                self.post_message(self.StepDone("started", True, "started, waiting for ready", running=running))
                current = "ready"
                ready = services.wait_ready(running, self._on_event("ready"))
                self.post_message(self.StepDone("ready", True, "ready", running=running, ready=ready))
        except Exception as exc:  # noqa: BLE001 - one line in the status panel, never a crash
            message, hint = error_text(exc)
            self.post_message(self.StepDone(current, False, message + (f" (hint: {hint})" if hint else "")))

    def on_run_screen_step_done(self, message: StepDone) -> None:
        if not message.ok:
            self._set_state(f"FAILED {message.step}: {message.text}")
            self.notify(message.text, title=f"{message.step} failed", severity="error", timeout=8)
            return
        if message.step == "verify":
            self.verified = message.verified
        elif message.step == "load":
            self.image = message.image
        elif message.step in ("started", "ready"):
            self.running = message.running
            self.ready = message.ready
            if self.started_at is None:
                self.started_at = self._now()
            if message.step == "started":
                self.follow_logs(self.running.name)
            self.action_refresh_ps()
        self._set_state(message.text)

    # ---- logs -----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="logs", exit_on_error=False, description="log tail")
    def follow_logs(self, name: str) -> None:
        import threading

        from ezrunner.tui.batching import LineBatcher
        from textual.worker import get_current_worker

        log = self.query_one(LogTail)
        worker = get_current_worker()
        stop = threading.Event()
        self._log_stop = stop
        batcher = LineBatcher(lambda batch: self.app.call_from_thread(log.append_lines, batch), interval=0.1)
        try:
            for lines in self.app.services.logs(name, stop_event=stop, tail=200):
                if worker.is_cancelled or stop.is_set():
                    break
                batcher.add(lines)
        except Exception as exc:  # noqa: BLE001 - the stream ended (container gone, Docker down)
            batcher.add([f"(log stream ended: {exc})"])
        finally:
            batcher.flush()
            if not worker.is_cancelled:
                self.app.call_from_thread(log.set_placeholder, "Stream exited! No more logs...")

    def action_toggle_follow(self) -> None:
        self.notify(f"follow {'on' if self.query_one(LogTail).toggle_follow() else 'off'}")

    def action_toggle_wrap(self) -> None:
        self.notify(f"wrap {'on' if self.query_one(LogTail).toggle_wrap() else 'off'}")

    def action_filter(self) -> None:
        box = self.query_one("#run-filter", Input)
        box.display = True
        box.value = self.query_one(LogTail).filter_text
        box.focus()

    @on(Input.Submitted, "#run-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one(LogTail).set_filter(event.value.strip())
        event.input.display = bool(event.value.strip())
        self.query_one(LogTail).focus()

    def action_clear_log(self) -> None:
        self.query_one(LogTail).clear_buffer()

    def save_log(self, path: str) -> None:
        from ezrunner.core.fsutil import atomic_write_text

        lines = self.query_one(LogTail).buffer
        atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))

    def action_save_log(self) -> None:
        from ezrunner.core.locations import home
        from ezrunner.tui.dialogs.path import PathDialog

        name = self.running.name if self.running is not None else "bundle"

        def done(path: str | None) -> None:
            if not path:
                return
            try:
                self.save_log(path)
            except OSError as exc:
                self.notify(f"cannot save {path}: {exc.strerror or exc}", severity="error")
                return
            self.notify(f"log saved to {path}")

        self.app.push_screen(PathDialog("Save the log to", str(home() / "logs" / f"{name}.log")), done)

    # ---- stop / restart / chat ------------------------------------------------------------------
    def action_stop(self) -> None:
        if self.running is None:
            self.notify("nothing started from this screen; see the list for what runs", severity="warning")
            return
        from ezrunner.tui.dialogs.confirm import ConfirmDialog

        name = self.running.name

        def answered(yes: bool | None) -> None:
            if yes:
                self._set_state("stopping…")
                self.stop_container(name, restart=False)

        self.app.push_screen(ConfirmDialog(f"Stop {name}?", "The container stops and is removed.", yes="Stop", danger=True), answered)

    def action_restart(self) -> None:
        if self.running is None or not self.bundle:
            self.notify("nothing to restart", severity="warning")
            return
        self._set_state("restarting…")
        self.stop_container(self.running.name, restart=True)

    @work(thread=True, exclusive=True, group="run-step", exit_on_error=False, description="stop")
    def stop_container(self, name: str, restart: bool) -> None:
        from ezrunner.tui.app import error_text

        try:
            self.app.services.stop(name, remove=True)
        except Exception as exc:  # noqa: BLE001
            self.post_message(self.StepDone("stop", False, error_text(exc)[0]))
            return
        self.post_message(self.StepDone("stopped", True, "stopped", restart=restart))

    @on(StepDone)
    def _after_stop(self, message: StepDone) -> None:
        if message.step != "stopped":
            return
        self._stop_logs()
        self.running = None
        self.ready = None
        self.started_at = None
        self.gpu_text = ""
        self.action_refresh_ps()
        if message.restart:
            self.call_later(self.action_start)

    def action_chat(self) -> None:
        if self.ready is None:
            self.notify("start a bundle and wait until it is ready", severity="warning")
            return
        key = self.query_one("#run-key", Input).value.strip()
        self.app.action_open_chat(self.ready.base_url, key, self.ready.model)

    def _stop_logs(self) -> None:
        stop = getattr(self, "_log_stop", None)
        if stop is not None:
            stop.set()
        self.workers.cancel_group(self, "logs")

    def on_unmount(self) -> None:
        self._stop_logs()

    def action_back(self) -> None:
        self.app.pop_screen()
