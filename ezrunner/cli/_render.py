"""The CLI's one renderer of ``core/events.py`` events (rich on stderr).

:class:`EventRenderer` folds every event into a ``core.progress.ProgressState`` and
draws from it. ``ezrunner pack`` and ``ezrunner run`` use the same class with a
different :class:`Layout`:

* ``PACK``: one row per phase (phase, text, bar, bytes, speed) that stays on screen;
  on a pipe, one plain line per phase start, build step and phase end.
* ``RUN``: transient byte bars for verify/load (a row per Docker layer), an
  elapsed-time line with the latest log line while waiting for ready, and an
  "ok"/"failed" line per phase.

Both fit 80 columns. rich is imported when a renderer is made, not at import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ezrunner.core import events as ev
from ezrunner.core.progress import ProgressState

STYLES = {"warning": "yellow", "error": "red"}
TEXT_WIDTH = 28  # the text column of the phase table


@dataclass(frozen=True)
class Layout:
    """What differs between the commands' displays."""

    # pack: a row for every phase that stays, the build log's last lines under it, "level:"
    # before notices and, on a pipe, a plain line per phase start, build step and phase end.
    # run: transient bars only for bar_labels' phases and an "ok"/"failed" line per phase end.
    phase_rows: bool
    # phase -> fixed bar text (run: "verifying sha256"); other phases show their label
    bar_labels: Mapping[str, str] = field(default_factory=dict)
    # a phase shown as elapsed time + the latest log line, with its log lines as a block at the end
    wait_phase: str | None = None
    # phases whose start and end lines are not printed
    quiet: frozenset[str] = frozenset()


PACK = Layout(phase_rows=True)
RUN = Layout(
    phase_rows=False,
    bar_labels={"verify": "verifying sha256", "load": "loading into Docker"},
    wait_phase="ready",
    quiet=frozenset({"start"}),
)


def esc(text: str) -> str:
    """``text`` shown as is where rich reads markup (a log line with "[/x]" in it)."""
    from rich.markup import escape

    return escape(text)


def short(text: str, n: int = TEXT_WIDTH) -> str:
    """One line of at most ``n`` characters, padded to ``n``."""
    text = " ".join(str(text).split())
    return (text if len(text) <= n else text[: n - 1] + "…").ljust(n)


class EventRenderer:
    """Render core events on the terminal (or plainly on a pipe) in one :class:`Layout`.
    Call it with each event (an ``on_event`` callback); ``close()`` stops the live
    display. Use it as a context manager to close it on the way out."""

    def __init__(self, layout: Layout, console: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console

        self.layout = layout
        self.console = console or Console(stderr=True, highlight=False)
        self.plain = not self.console.is_terminal
        self.state = ProgressState()
        self._clock = clock
        self._bars, self._wait = _make_progress(layout, self.console)
        self._tasks: dict[tuple[str, str], Any] = {}
        self._active: Any = None

    @property
    def started(self) -> str | None:
        """The container name once the start phase finished (run)."""
        if not self.state.finished.get("start"):
            return None
        return str(self.state.data.get("start", {}).get("name") or "") or None

    def __enter__(self) -> EventRenderer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._active is not None:
            self._active.stop()
            self._active = None
            self._tasks.clear()

    def __call__(self, event: ev.Event) -> None:
        self.state.fold(event, self._clock())
        handler = self._HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    # ---- the live display ------------------------------------------------------------------------
    def _use(self, progress: Any) -> None:
        if self._active is progress:
            return
        self.close()
        progress.start()
        self._active = progress

    def _print(self, *args: Any, **kwargs: Any) -> None:
        """Print above the live display (or plainly when none is live)."""
        target = self._active.console if self._active is not None else self.console
        target.print(*args, highlight=False, **kwargs)

    def _row(self, phase: str, item: str = "", text: str = "", total: int | None = None) -> Any:
        """The bar of (phase, item), added the first time it is needed."""
        key = (phase, item)
        if key not in self._tasks:
            self._use(self._bars)
            fields = {"phase": phase} if self.layout.phase_rows else {}
            self._tasks[key] = self._bars.add_task(text, total=total, **fields)
        return self._tasks[key]

    def _row_text(self, text: str) -> str:
        return esc(short(text) if self.layout.phase_rows else text[:30])

    # ---- one method per event type ---------------------------------------------------------------
    def _started(self, e: ev.PhaseStarted) -> None:
        layout = self.layout
        if e.phase == layout.wait_phase:
            self._use(self._wait)
            self._tasks[(e.phase, "")] = self._wait.add_task("waiting for ready", total=e.total, line="")
        elif layout.phase_rows:
            task = self._row(e.phase, text=self._row_text(e.label or e.phase), total=e.total)
            self._bars.update(task, description=self._row_text(e.label), total=e.total, completed=0)
            if self.plain:
                self._print(f"{e.phase}: {esc(e.label)}")
        elif e.phase in layout.bar_labels and e.total:
            self._row(e.phase, text=layout.bar_labels[e.phase], total=e.total)
        elif e.phase not in layout.quiet:
            self._print(f"[bold]{esc(e.label)}[/]", soft_wrap=True)

    def _bytes(self, e: ev.BytesProgress) -> None:
        # pack: the phase's total (its items add up); run: a row per item (a Docker layer)
        meter = None if self.layout.phase_rows else self.state.item(e.phase, e.item)
        item = e.item if meter is not None else ""
        meter = meter or self.state.totals[e.phase]
        text = self._row_text(e.phase if self.layout.phase_rows else e.item)
        self._bars.update(self._row(e.phase, item, text, meter.total), completed=meter.done, total=meter.total)

    def _step(self, e: ev.StepProgress) -> None:
        step = self.state.steps[e.phase]
        if e.phase == self.layout.wait_phase:
            task = self._tasks.get((e.phase, ""))
            if task is not None:
                width = max(10, self.console.width - 40)
                self._wait.update(task, completed=step.index, line=esc(step.name[-width:]))
        elif self.layout.phase_rows:
            text = f"step {step.index}/{step.count or '?'}: {step.name}"
            self._bars.update(self._row(e.phase, text=self._row_text(e.phase)), description=self._row_text(text))
            if self.plain:
                self._print(f"{e.phase}: step {step.index}/{step.count or '?'}: {esc(step.name[:100])}")

    def _logs(self, e: ev.LogLines) -> None:
        if e.phase == self.layout.wait_phase:
            self.close()
            self.console.print(f"[bold]--- last {len(e.lines)} log lines ---[/]")
            for line in e.lines:
                self.console.print(line, markup=False, highlight=False, soft_wrap=True, emoji=False)
            self.console.print("[bold]---[/]")
        elif self.layout.phase_rows and not self.plain:
            for line in e.lines[-3:]:
                self._print("  " + line[:76], style="dim", markup=False)

    def _notice(self, e: ev.Notice) -> None:
        if self.layout.phase_rows:
            self._print(f"[{STYLES.get(e.level, 'cyan')}]{e.level}:[/] {esc(e.message)}")
            return
        from rich.text import Text

        self._print(Text(e.message, style=STYLES.get(e.level, "")), soft_wrap=True)

    def _finished(self, e: ev.PhaseFinished) -> None:
        if self.layout.phase_rows:
            self._finish_row(e)
            return
        if e.phase in self.layout.bar_labels or e.phase == self.layout.wait_phase:
            self.close()
        if e.phase not in self.layout.quiet:
            mark = "[green]ok[/]" if e.ok else "[red]failed[/]"
            self.console.print(f"{e.phase}: {mark} {esc(e.detail)}", soft_wrap=True)

    def _finish_row(self, e: ev.PhaseFinished) -> None:
        task = self._tasks.get((e.phase, ""))
        if task is not None:
            total = self._bars.tasks[task].total
            if total is not None:
                self._bars.update(task, completed=total)
            self._bars.update(task, description=self._row_text(e.detail or e.phase))
        if self.plain and e.detail:
            self._print(f"{e.phase}: {esc(e.detail)}")

    _HANDLERS: dict[type, Callable[[EventRenderer, Any], None]] = {
        ev.PhaseStarted: _started,
        ev.BytesProgress: _bytes,
        ev.StepProgress: _step,
        ev.LogLines: _logs,
        ev.Notice: _notice,
        ev.PhaseFinished: _finished,
    }


def _make_progress(layout: Layout, console: Any) -> tuple[Any, Any]:
    """The rich displays of a layout: (bars, the wait line or None)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if layout.phase_rows:
        # fits 80 columns: phase 8 + text 28 + bar 10 + bytes ~19 + speed ~10
        table = Progress(
            TextColumn("[bold]{task.fields[phase]:<8}[/]"), TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=10), DownloadColumn(), TransferSpeedColumn(),
            console=console, transient=False, disable=not console.is_terminal,
        )
        return table, None
    bars = Progress(
        TextColumn("{task.description}"), BarColumn(bar_width=24), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
    )
    wait = Progress(
        TextColumn("{task.description}"), TimeElapsedColumn(), TextColumn("[dim]{task.fields[line]}"),
        console=console, transient=True,
    )
    return bars, wait

