"""Step 1: find a model on Hugging Face, ModelScope, in the local caches, by path,
or take the built-in demo model."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ezrunner.core.errors import EzError
from ezrunner.tui.format import dash, human_bytes, human_count, yes_no
from ezrunner.tui.screens.base import EzScreen
from ezrunner.tui.widgets.steps import StepIndicator
from ezrunner.tui.widgets.toggles import MarkCheckbox as Checkbox
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Input, Static

if TYPE_CHECKING:
    from ezrunner.core.hubs import ModelDetails, ModelRef, SearchResult

SOURCE_LABELS = {"hf": "HF", "modelscope": "ModelScope", "local": "Local"}
SOURCE_SHORT = {"hf": "hf", "modelscope": "ms", "local": "local", "hf-cache": "hf-c", "modelscope-cache": "ms-c"}
NO_HUB = (
    "No model hub is reachable: showing local sources only. "
    "Type a model folder path, or press Ctrl+D for the built-in demo model."
)


def looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(text))


class SearchScreen(EzScreen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back", id="search.back"),
        Binding("slash", "focus_query", "Search", id="search.focus"),
        Binding("ctrl+d", "demo", "Demo model", id="search.demo", priority=True),
        Binding("ctrl+n", "next", "Next", id="search.next"),
    ]

    class Searched(Message):
        def __init__(self, results: list[SearchResult], problems: list[str], query: str) -> None:
            super().__init__()
            self.results = results
            self.problems = problems
            self.query = query

    class DetailsReady(Message):
        def __init__(self, model: ModelRef | str, details: ModelDetails | None, error: str | None, advance: bool) -> None:
            super().__init__()
            self.model = model
            self.details = details
            self.error = error
            self.advance = advance

    def compose(self) -> ComposeResult:
        state = self.app.wizard
        yield Header()
        yield StepIndicator(1)
        with Horizontal(id="search-bar"):
            yield Input(state.query, placeholder="model name, hub id or local path", id="search-query")
            for key, label in SOURCE_LABELS.items():
                yield Checkbox(label, key in state.sources, id=f"src-{key}", compact=True)
        yield Static("", id="search-notice", markup=False)
        with Vertical(id="search-main"):
            yield DataTable(id="search-results", cursor_type="row", zebra_stripes=True)
            yield Static("Highlight a model to see its details.", id="search-details", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#search-results", DataTable)
        narrow = self.app.size.width < 110
        # at 80 columns: fixed widths that fit (the details pane shows the full id)
        widths = {"source": 5, "downloads": 6, "size": 9, "format": 11, "params": 6, "gated": 5}
        widths["model"] = max(16, self.app.size.width - sum(widths.values()) - 2 * (len(widths) + 1) - 2)
        for key, label in (("model", "model"), ("source", "src"), ("downloads", "dl"), ("size", "size"),
                           ("format", "format"), ("params", "params"), ("gated", "gated")):
            table.add_column(label if narrow else key, key=key, width=widths[key] if narrow else None)
        state = self.app.wizard
        if state.results:
            self._fill(state.results)
        if state.hub_notice_shown:
            self.query_one("#search-notice", Static).update(NO_HUB)
        self.query_one("#search-query", Input).focus()

    # ---- search ---------------------------------------------------------------------------------
    def _sources(self) -> list[str]:
        return [key for key in SOURCE_LABELS if self.query_one(f"#src-{key}", Checkbox).value]

    @on(Checkbox.Changed)
    def _sources_changed(self, event: Checkbox.Changed) -> None:
        self.app.wizard.sources = set(self._sources())

    @on(Input.Changed, "#search-query")
    def _query_changed(self, event: Input.Changed) -> None:
        self.app.wizard.query = event.value

    @on(Input.Submitted, "#search-query")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            return
        if looks_like_path(text):
            self.choose(os.path.abspath(os.path.expanduser(text)))
            return
        if not self._sources():
            self.query_one("#search-notice", Static).update("Tick at least one source (HF, ModelScope, Local).")
            return
        self.query_one("#search-notice", Static).update(f"Searching {', '.join(self._sources())} for {text!r}…")
        self.run_search(text, self._sources())

    @work(thread=True, exclusive=True, group="search", exit_on_error=False, description="model search")
    def run_search(self, query: str, sources: list[str]) -> None:
        outcome = self.app.services.search(query, sources)
        self.post_message(self.Searched(outcome.results, outcome.problems, query))

    def on_search_screen_searched(self, message: Searched) -> None:
        state = self.app.wizard
        state.results = message.results
        state.weight_formats = {}
        self._fill(message.results)
        notice = self.query_one("#search-notice", Static)
        remote_failed = [p for p in message.problems if not p.lower().startswith("local")]
        wanted_remote = {"hf", "modelscope"} & set(self._sources())
        if wanted_remote and remote_failed and len(remote_failed) >= len(wanted_remote):
            if not state.hub_notice_shown:
                state.hub_notice_shown = True
                self.notify("; ".join(remote_failed), title="hub unreachable", severity="warning", timeout=8)
            notice.update(NO_HUB)
        elif message.problems:
            notice.update("; ".join(message.problems))
        else:
            notice.update(f"{len(message.results)} results for {message.query!r}. Enter picks the highlighted model.")
        if message.results:
            self.query_one("#search-results", DataTable).focus()

    def _fill(self, results: list[SearchResult]) -> None:
        table = self.query_one("#search-results", DataTable)
        table.clear()
        formats = self.app.wizard.weight_formats
        for index, row in enumerate(results):
            ref = self._model_of(row)
            table.add_row(
                str(dash(row.id, "?")),
                SOURCE_SHORT.get(row.source, str(dash(row.source))),
                human_count(row.downloads),
                human_bytes(row.size_bytes),
                formats.get(ref, "-") if ref is not None else "-",
                human_count(row.parameters),
                yes_no(row.gated),
                key=str(index),
            )

    def _fill_format(self, model: ModelRef | str, details: ModelDetails) -> None:
        """The search API does not say the weight format; the details do - fill it in."""
        fmt = details.weight_format
        if not fmt:
            return
        table = self.query_one("#search-results", DataTable)
        for index, row in enumerate(self.app.wizard.results):
            ref = self._model_of(row)
            if ref is not None and ref == model:
                self.app.wizard.weight_formats[ref] = fmt
                try:
                    table.update_cell(str(index), "format", fmt)
                except Exception:  # noqa: BLE001 - the table was refilled meanwhile
                    pass

    @staticmethod
    def _model_of(row: SearchResult) -> ModelRef | None:
        """The ``ModelRef`` a pick of ``row`` means (None for an id the hub allows
        but a ModelRef does not)."""
        try:
            return row.ref
        except EzError:
            return None

    def _row_model(self, row_key: Any) -> ModelRef | None:
        try:
            row = self.app.wizard.results[int(row_key.value)]
        except (ValueError, IndexError, AttributeError, TypeError):
            return None
        return self._model_of(row)

    # ---- details --------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#search-results")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        model = self._row_model(event.row_key)
        if model:
            self.load_details(model, advance=False)

    @on(DataTable.RowSelected, "#search-results")
    def _selected(self, event: DataTable.RowSelected) -> None:
        model = self._row_model(event.row_key)
        if model:
            self.choose(model)

    def choose(self, model: ModelRef | str) -> None:
        self.query_one("#search-details", Static).update(f"Reading {model}…")
        self.load_details(model, advance=True)

    @work(thread=True, exclusive=True, group="details", exit_on_error=False, description="model details")
    def load_details(self, model: ModelRef | str, advance: bool) -> None:
        try:
            from ezrunner.core.hubs import parse_model_ref

            model = parse_model_ref(model)  # a typed folder path: a local ModelRef
            details = self.app.services.model_details(model)
        except Exception as exc:  # noqa: BLE001 - one line in the pane, never a crash
            from ezrunner.tui.app import error_text

            self.post_message(self.DetailsReady(model, None, error_text(exc)[0], advance))
            return
        self.post_message(self.DetailsReady(model, details, None, advance))

    def on_search_screen_details_ready(self, message: DetailsReady) -> None:
        pane = self.query_one("#search-details", Static)
        if message.error:
            pane.update(f"{message.model}: {message.error}")
            if message.advance:
                self.notify(message.error, title="cannot use this model", severity="error")
            return
        details = message.details
        if details is None:
            return
        pane.update(describe_details(message.model, details))
        self._fill_format(message.model, details)
        if message.advance:
            state = self.app.wizard
            if state.model != message.model:
                state.plan = None
                state.no_fit_confirmed = False
            state.model = message.model
            state.details = details
            from ezrunner.tui.screens.hardware import HardwareScreen

            self.app.push_screen(HardwareScreen())

    # ---- actions --------------------------------------------------------------------------------
    def action_focus_query(self) -> None:
        self.query_one("#search-query", Input).focus()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        table = self.query_one("#search-results", DataTable)
        if table.row_count:
            model = self._row_model(table.coordinate_to_cell_key(table.cursor_coordinate).row_key)
            if model:
                self.choose(model)
                return
        if self.app.wizard.model:
            self.choose(self.app.wizard.model)

    def action_demo(self) -> None:
        self.query_one("#search-details", Static).update("Writing the built-in demo model…")
        self.make_demo()

    @work(thread=True, exclusive=True, group="details", exit_on_error=False, description="demo model")
    def make_demo(self) -> None:
        from ezrunner.core.demo_model import write_demo_model
        from ezrunner.core.locations import demo_model_dir

        dest = demo_model_dir()
        if not (dest / "config.json").is_file():
            write_demo_model(dest, preset="tiny")
        self.app.call_from_thread(self.choose, str(dest))


def describe_details(model: ModelRef | str, d: ModelDetails) -> str:
    """The details pane."""
    files = d.weight_files
    names = [str(f.path) for f in files[:3]]
    more = f" (+{len(files) - 3})" if len(files) > 3 else ""
    c = d.config
    arch = c.architecture if c else None
    context = c.max_position_embeddings if c else None
    lines = [
        f"{model}  rev {str(d.revision or '-')[:12]}",
        f"arch {arch or '-'} · params {human_count(d.parameters)} · "
        f"dtype {d.dtype or '-'} · context {context or '-'}",
        f"weights {d.weight_format or '-'} {human_bytes(d.weights_total_bytes)} · "
        f"remote code {'REQUIRED' if d.trust_remote_code else 'no'} · gated {yes_no(d.gated)}",
        "files " + (", ".join(names) + more if names else "-"),
    ]
    for note in d.notes[:1]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
