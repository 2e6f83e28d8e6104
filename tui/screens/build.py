"""Step 4: build and export, live - download bytes/throughput/ETA per file and in
total, build steps, the build log, export bytes. Cancel asks first."""

from __future__ import annotations

from typing import Any

from ezrunner.core.progress import Meter
from ezrunner.tui.build_job import BuildJob
from ezrunner.tui.format import human_bytes, human_duration
from ezrunner.tui.screens.base import EzScreen
from ezrunner.tui.widgets.log_tail import LogTail
from ezrunner.tui.widgets.steps import StepIndicator
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Label, ProgressBar, Static

PHASES = (("download", "Download"), ("build", "Build"), ("export", "Export"))


def item_line(name: str, item: Meter) -> str:
    total = f" / {human_bytes(item.total)}" if item.total is not None else ""
    rate = item.rate()
    eta = item.eta()
    parts = [f"{name}: {human_bytes(item.done)}{total}" if name else f"{human_bytes(item.done)}{total}"]
    if rate:
        parts.append(f"{human_bytes(rate)}/s")
    if eta is not None:
        parts.append(f"ETA {human_duration(eta)}")
    return " · ".join(parts)


class BuildScreen(EzScreen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back", id="build.back"),
        Binding("x", "cancel_build", "Cancel build", id="build.cancel"),
        Binding("f", "toggle_follow", "Follow", id="build.follow"),
        Binding("ctrl+n", "next", "Done", id="build.next"),
    ]

    def __init__(self, job: BuildJob | None = None) -> None:
        super().__init__()
        self.job = job

    def compose(self) -> ComposeResult:
        clock = self.app.clock
        yield Header()
        yield StepIndicator(4)
        for key, title in PHASES:
            with Horizontal(classes="phase-row", id=f"row-{key}"):
                yield Label(f"{title:<9}", classes="phase-title")
                kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
                yield ProgressBar(total=None, show_eta=False, id=f"bar-{key}", **kwargs)
                yield Static("waiting", id=f"info-{key}", classes="phase-info", markup=False)
        yield Static("", id="build-detail", markup=False)
        yield Static("", id="build-status", markup=False)
        yield LogTail(max_lines=5000, placeholder="Waiting for the build log...", id="build-log")
        yield Footer()

    def on_mount(self) -> None:
        app = self.app
        if self.job is None:
            job = getattr(app, "build_job", None)
            if job is None or not (job.running or job.progress.state == "idle"):
                job = app.start_build()
            self.job = job
        self.job.listeners.append(self._job_update)
        if self.job.log:
            self.query_one(LogTail).append_lines(self.job.log)
        self._render_progress()

    def on_unmount(self) -> None:
        if self.job is not None and self._job_update in self.job.listeners:
            self.job.listeners.remove(self._job_update)

    def _job_update(self, lines: list[str], finished: bool) -> None:
        if lines:
            self.query_one(LogTail).append_lines(lines)
        self._render_progress()
        if finished and self.job and self.job.progress.state == "done":
            self.action_next()

    def _render_progress(self) -> None:
        assert self.job is not None
        p = self.job.progress
        for key, _title in PHASES:
            bar = self.query_one(f"#bar-{key}", ProgressBar)
            info = self.query_one(f"#info-{key}", Static)
            if key == "build":
                step = p.steps.get(key)
                if step is not None:
                    index, count, name = step
                    bar.update(total=count, progress=index)
                    info.update(f"step {index}/{count or '?'} {name}")
                elif key in p.finished:
                    info.update("done" if p.finished[key] else "failed")
                if p.finished.get(key):
                    bar.update(total=1, progress=1)
                continue
            total = p.totals.get(key)
            if total is None:
                continue
            if total.total:
                bar.update(total=total.total, progress=total.done)
            if p.finished.get(key):
                info.update(f"{human_bytes(total.done)} · done")
                continue
            info.update(item_line("", total).removeprefix(": "))
        detail = ""
        for phase in (p.phase, "download"):
            if phase in p.current_item and phase in p.items:
                name = p.current_item[phase]
                detail = f"{phase} file " + item_line(name, p.items[phase][name])
                break
            if phase in p.labels:
                detail = f"{phase}: {p.labels[phase]}"
                break
        self.query_one("#build-detail", Static).update(detail)
        status = self.query_one("#build-status", Static)
        status.set_class(p.state == "failed", "failed")
        if p.state == "running":
            status.update(f"Running: {p.phase_labels.get(p.phase, p.phase) or 'starting'}… (x cancels)")
        elif p.state == "failed":
            status.update(f"FAILED: {p.error}" + (f"  hint: {p.hint}" if p.hint else ""))
        elif p.state == "cancelled":
            status.update(f"CANCELLED: {p.error or 'cancelled'}")
        elif p.state == "done":
            status.update("Done. Ctrl+N shows the bundle.")

    # ---- actions --------------------------------------------------------------------------------
    def action_cancel_build(self) -> None:
        if self.job is None or not self.job.running:
            return
        from ezrunner.tui.dialogs.confirm import ConfirmDialog

        def answered(yes: bool | None) -> None:
            if yes and self.job is not None and self.job.running:
                self.query_one("#build-status", Static).update("Cancelling… removing temporaries")
                self.job.cancel()

        self.app.push_screen(
            ConfirmDialog("Cancel the build?", "The work stops and temporaries are removed.", yes="Cancel build", no="Keep building", danger=True),
            answered,
        )

    def action_back(self) -> None:
        if self.job is not None and self.job.running:
            self.action_cancel_build()
            return
        self.app.pop_screen()

    def action_toggle_follow(self) -> None:
        follow = self.query_one(LogTail).toggle_follow()
        self.notify(f"follow {'on' if follow else 'off'}")

    def action_next(self) -> None:
        if self.job is None or self.job.progress.state != "done":
            return
        if isinstance(self.app.screen, BuildScreen) and self.app.screen is self:
            from ezrunner.tui.screens.done import DoneScreen

            result = self.job.progress.result
            if result is None:
                return
            self.app.wizard.result = result
            self.app.push_screen(DoneScreen(result))
