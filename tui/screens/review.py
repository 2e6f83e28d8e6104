"""Step 3: the plan from ``ezrunner.core.plan`` - engine, memory figures, reasons
and warnings - recomputed live when the context length, dtype or engine change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ezrunner.tui.screens.base import EzScreen
from ezrunner.tui.widgets.steps import StepIndicator
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Label, Select, Static

if TYPE_CHECKING:
    from ezrunner.core.hardware import HardwareProfile
    from ezrunner.core.hubs import ModelDetails, ModelRef
    from ezrunner.core.plan import Plan, PlanOptions

DTYPES = ("auto", "bfloat16", "float16", "float32")
ENGINES = ("auto", "vllm", "transformers")
ERROR_CODES = {"DOES_NOT_FIT", "RAM_INSUFFICIENT", "WEIGHTS_EXCEED_GPU_MEMORY"}


def plan_table(plan: Plan) -> Table:
    """The rows of ``core.plan.plan_rows`` (the same the CLI prints)."""
    from ezrunner.core.plan import plan_rows

    fits = plan.fits
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in plan_rows(plan):
        if key in ("model", "target"):
            continue
        if key == "fits":
            table.add_row(key, Text("yes" if fits else "NO - does not fit", style="" if fits else "bold red"))
        else:
            table.add_row(key, value)
    return table


def reasons_text(plan: Plan) -> Text:
    text = Text()
    text.append("Why this engine\n", style="bold")
    for reason in plan.reasons or ["-"]:
        text.append(f"  • {reason}\n")
    if plan.warnings:
        text.append("Warnings\n", style="bold")
    for warning in plan.warnings:
        error = warning.code in ERROR_CODES
        text.append(f"  {'ERROR' if error else 'WARN'} {warning.code}: ", style="bold red" if error else "yellow")
        text.append(f"{warning.message}\n")
    return text


class ReviewScreen(EzScreen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back", id="review.back"),
        Binding("ctrl+n", "next", "Build", id="review.next"),
    ]

    class Planned(Message):
        def __init__(self, plan: Plan | None, error: str | None, generation: int) -> None:
            super().__init__()
            self.plan = plan
            self.error = error
            self.generation = generation

    def __init__(self) -> None:
        super().__init__()
        self._generation = 0
        self._debounce: Timer | None = None

    def compose(self) -> ComposeResult:
        s = self.app.wizard
        yield Header()
        yield StepIndicator(3)
        yield Static(self._target_line(), id="review-target", markup=False)
        with Horizontal(id="review-main"):
            with VerticalScroll(id="review-plan"):
                yield Static("Computing the plan…", id="review-table")
                yield Static("", id="review-reasons")
            with VerticalScroll(id="review-options", classes="form"):
                yield Label("Max context (tokens)")
                yield Input(s.max_model_len, placeholder="model's own", id="opt-max-len", restrict=r"[0-9]*", compact=True)
                yield Label("dtype")
                yield Select([(d, d) for d in DTYPES], value=s.dtype, allow_blank=False, id="opt-dtype", compact=True)
                yield Label("engine")
                yield Select([(e, e) for e in ENGINES], value=s.engine, allow_blank=False, id="opt-engine", compact=True)
                yield Label("Output bundle")
                yield Input(s.output or self._default_output(), id="opt-output", compact=True)
                yield Label("Base image (empty = default)")
                yield Input(s.base_image, placeholder="engine default", id="opt-base", compact=True)
                yield Label("Split size (e.g. 2G)")
                yield Input(s.split_size, placeholder="one file", id="opt-split", compact=True)
        yield Footer()

    def _target_line(self) -> str:
        s = self.app.wizard
        where = "THIS machine" if s.for_this_machine else "ANOTHER machine"
        summary = s.profile.summary() if s.profile is not None else ""
        name = str(s.model or "").rstrip("/").split("/")[-1]
        return f"For {where}: {summary} · model {name}"

    def _default_output(self) -> str:
        from pathlib import Path

        name = str(self.app.wizard.model or "model").rstrip("/").split("/")[-1] or "model"
        return str(Path.cwd() / f"{name}.tar")

    def on_mount(self) -> None:
        s = self.app.wizard
        if not s.output:
            s.output = self.query_one("#opt-output", Input).value
        if s.plan is not None:
            self._show(s.plan)
        self.recompute()
        self.query_one("#opt-max-len", Input).focus()

    # ---- live recompute -------------------------------------------------------------------------
    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        s = self.app.wizard
        if event.input.id == "opt-max-len":
            s.max_model_len = event.value
            self._schedule()
        elif event.input.id == "opt-output":
            s.output = event.value
        elif event.input.id == "opt-split":
            s.split_size = event.value
        elif event.input.id == "opt-base":
            s.base_image = event.value.strip()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        s = self.app.wizard
        if event.select.id == "opt-dtype" and event.value != s.dtype:
            s.dtype = str(event.value)
            self._schedule()
        elif event.select.id == "opt-engine" and event.value != s.engine:
            s.engine = str(event.value)
            self._schedule()

    def _schedule(self) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(0.15, self.recompute)

    def recompute(self) -> None:
        from ezrunner.core.plan import PlanOptions

        s = self.app.wizard
        self._generation += 1
        options = PlanOptions(
            max_model_len=int(s.max_model_len) if s.max_model_len.strip() else None, dtype=s.dtype, engine=s.engine
        )
        model = s.details if s.details is not None else s.model
        self.compute_plan(model, s.profile, options, self._generation)

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False, description="plan")
    def compute_plan(
        self, model: ModelDetails | ModelRef | None, profile: HardwareProfile | None, options: PlanOptions, generation: int
    ) -> None:
        try:
            plan = self.app.services.make_plan(model, profile, options)
        except Exception as exc:  # noqa: BLE001 - bad option: shown in place
            from ezrunner.tui.app import error_text

            self.post_message(self.Planned(None, error_text(exc)[0], generation))
            return
        self.post_message(self.Planned(plan, None, generation))

    def on_review_screen_planned(self, message: Planned) -> None:
        if message.generation != self._generation:
            return  # an older option set
        if message.error:
            self.query_one("#review-reasons", Static).update(Text(f"error: {message.error}", style="bold red"))
            return
        s = self.app.wizard
        if s.plan != message.plan:
            s.no_fit_confirmed = False
        s.plan = message.plan
        if message.plan is not None:
            self._show(message.plan)

    def _show(self, plan: Plan) -> None:
        self.query_one("#review-table", Static).update(plan_table(plan))
        self.query_one("#review-reasons", Static).update(reasons_text(plan))

    # ---- next -----------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        s = self.app.wizard
        if s.plan is None:
            self.notify("the plan is not ready yet", severity="warning")
            return
        if not s.output.strip():
            self.notify("choose the output bundle path", severity="error")
            return
        if s.split_size.strip():
            try:
                from ezrunner.core.bundle.format import parse_size

                parse_size(s.split_size.strip())
            except Exception as exc:  # noqa: BLE001
                self.notify(f"split size: {exc}", severity="error")
                return
        if not s.plan.fits and not s.no_fit_confirmed:
            from ezrunner.tui.dialogs.confirm import ConfirmDialog

            def answered(yes: bool | None) -> None:
                if yes:
                    s.no_fit_confirmed = True
                    self._go_build()

            self.app.push_screen(
                ConfirmDialog(
                    "This plan does NOT fit the target.",
                    "The bundle may fail to start there. Build it anyway?",
                    yes="Build anyway",
                    no="Go back",
                    danger=True,
                ),
                answered,
            )
            return
        self._go_build()

    def _go_build(self) -> None:
        from ezrunner.tui.screens.build import BuildScreen

        self.app.push_screen(BuildScreen())
