"""The one fold of progress events (core/progress.py) and the CLI's one renderer
(ezrunner/cli/_render.py), driven by real event sequences: verify_bundle on a
synthetic bundle, and events recorded from a real pack and a real run
(tests/fixtures/events/*.json, recorded with the tiny demo model and the mini
bundle of tests/support_run.py; paths shortened)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from ezrunner.core import events as ev
from ezrunner.core.bundle.reader import verify_bundle
from ezrunner.core.progress import Meter, ProgressState, Step
from support_run import make_synthetic_bundle, split_bundle

FIXTURES = Path(__file__).parent / "fixtures" / "events"


def recorded(name: str) -> list[ev.Event]:
    """The events of ``fixtures/events/<name>.json`` as the core's event objects."""
    events = []
    for row in json.loads((FIXTURES / f"{name}.json").read_text()):
        cls = getattr(ev, row.pop("type"))
        if "lines" in row:
            row["lines"] = tuple(row["lines"])
        events.append(cls(**row))
    return events


def fold_all(events: list[ev.Event]) -> tuple[ProgressState, list[str]]:
    state, lines = ProgressState(), []
    for now, event in enumerate(events):
        lines.extend(state.fold(event, float(now)))
    return state, lines


# ---- the fold ---------------------------------------------------------------------------------------
def test_items_add_up_and_a_label_item_is_the_phases_own_progress():
    """Per-file events add up; an event whose total is the phase's total is the
    phase's own progress, whatever its item says (a rate, the bundle name)."""
    p = ProgressState()
    p.fold(ev.PhaseStarted("download", "model", 300), 0.0)
    p.fold(ev.BytesProgress("download", "a.safetensors", 100, 200), 1.0)
    p.fold(ev.BytesProgress("download", "b.json", 50, 100), 2.0)
    assert p.totals["download"].done == 150 and p.totals["download"].total == 300
    assert p.current_item["download"] == "b.json"
    assert p.item("download", "a.safetensors") == Meter(100, 200, 1.0, 1.0)
    # the hub download reports the folder size with a rate as its item
    p.fold(ev.BytesProgress("download", "12.5 MB/s", 250, 300), 3.0)
    p.fold(ev.BytesProgress("download", "12.7 MB/s", 280, 300), 4.0)
    assert p.totals["download"].done == 280
    assert p.labels["download"] == "12.7 MB/s" and p.item("download", "12.7 MB/s") is None
    assert p.totals["download"].rate() == 280 / 4.0 and p.totals["download"].eta() == 20 / 70
    # whole-phase progress without an item; steps; logs; failure
    p.fold(ev.PhaseStarted("export", "bundle", 1000), 5.0)
    p.fold(ev.BytesProgress("export", "", 400, 1000), 6.0)
    assert p.totals["export"].done == 400 and p.phase == "export"
    p.fold(ev.StepProgress("build", 2, 5, "RUN pip install"), 6.0)
    assert p.steps["build"] == Step(2, 5, "RUN pip install") == (2, 5, "RUN pip install")
    assert p.fold(ev.LogLines("build", ("a", "b")), 6.0) == ["a", "b"] and p.log_lines == 2
    assert p.fold(ev.Notice("build", "warning", "slow disk"), 6.0) == ["[warning] slow disk"]
    p.fold(ev.PhaseFinished("export", ok=False, detail="disk full"), 7.0)
    assert p.error == "disk full" and p.finished["export"] is False and p.details["export"] == "disk full"


def test_meter_without_times_or_bytes_has_no_rate():
    assert Meter().rate() is None and Meter(10, 100).eta() is None
    assert Meter(0, 100, 0.0, 5.0).rate() is None  # nothing done yet
    assert Meter(50, None, 0.0, 5.0).eta() is None  # size unknown


def test_fold_of_a_real_verify(synthetic_bundle):
    state, lines = ProgressState(), []
    source, _info = verify_bundle(synthetic_bundle, lambda e: lines.extend(state.fold(e, 1.0)))
    assert state.totals["verify"].done == state.totals["verify"].total == source.size
    assert state.labels["verify"] == synthetic_bundle.name  # the file name is a label, not an item
    assert state.items["verify"] == {}
    assert state.finished == {"verify": True} and "matches" in state.details["verify"]
    assert state.data["verify"]["verified"] is True and state.error is None and lines == []


def test_fold_of_a_real_split_verify_keeps_its_notice(tmp_path):
    parts = split_bundle(make_synthetic_bundle(tmp_path / "m.tar"), 100_000)
    state, lines = ProgressState(), []
    verify_bundle(parts[0], lambda e: lines.extend(state.fold(e, 1.0)))
    assert [level for level, _m in state.notices] == ["info"]
    assert lines == [f"[info] {state.notices[0][1]}"] and f"{len(parts)} parts" in lines[0]
    assert state.totals["verify"].done == sum(p.stat().st_size for p in parts)


def test_fold_of_a_recorded_pack():
    state, lines = fold_all(recorded("pack"))
    assert state.finished == {"download": True, "plan": True, "build": True, "export": True}
    export = state.totals["export"]
    assert export.total == 1342937064 and 0.9 * export.total < export.done <= export.total  # throttled
    assert state.labels["export"] == "bundle"
    assert state.phase_labels["export"] == "writing t.tar"
    assert lines == ["[info] reusing the cached engine image ezrunner-engine/transformers-cpu:4e882c1792811fff"]
    assert state.data["build"]["reused"] is True  # data is kept as it came, per phase


def test_fold_of_a_recorded_run():
    state, lines = fold_all(recorded("run"))
    assert list(state.finished) == ["verify", "load", "start", "ready"] and all(state.finished.values())
    load = state.totals["load"]
    assert load.done == load.total == 175872000  # the docker load stream, not its layers
    assert list(state.items["load"]) == ["layer 31b644fd0fec"]
    assert state.steps["ready"] == Step(1, 60, 'request "GET /ready HTTP/1.1" 503 -')
    assert lines[0] == "Loaded image: ezrunner-test/run-mini-254eee23:1"
    assert state.data["start"]["name"] == "ez-rec-ev-254eee23"


# ---- the CLI renderer -------------------------------------------------------------------------------
def render(layout_name: str, events, *, terminal: bool = False, width: int = 80) -> tuple[str, object]:
    from rich.console import Console

    from ezrunner.cli import _render

    console = Console(file=io.StringIO(), width=width, highlight=False, force_terminal=terminal)
    renderer = _render.EventRenderer(getattr(_render, layout_name), console)
    with renderer:
        ev.drive(events, renderer)
    return console.file.getvalue(), renderer


def test_pack_layout_plain_output_is_the_one_line_per_phase_record():
    out, _r = render("PACK", recorded("pack"))
    assert out == (
        "download: model /tmp/t/models0/tiny-llama\n"
        "download: /tmp/t/models0/tiny-llama\n"
        "plan: planning engine and memory\n"
        "plan: transformers on cpu\n"
        "build: engine image: transformers on cpu, base \n"
        "ezrunner-test/debian-python:bookworm\n"
        "info: reusing the cached engine image \n"
        "ezrunner-engine/transformers-cpu:4e882c1792811fff\n"
        "build: engine image ezrunner-engine/transformers-cpu:4e882c1792811fff\n"
        "export: writing t.tar\n"
        "export: t.tar: 1.3 GiB in 4.7 s\n"
    )


def test_run_layout_plain_output_and_the_started_name():
    out, renderer = render("RUN", recorded("run"))
    assert out == (
        "\n"
        "verify: ok sha256 63d4f80c04e10ee3… matches\n"
        "\n"
        "load: ok loaded ezrunner-test/run-mini-254eee23:1\n"
        "started ez-rec-ev-254eee23 (transformers, no GPU) from ezrunner-test/run-mini-254eee23:1\n"
        "\n"
        "ready: ok ready in 2s\n"
    )
    assert renderer.started == "ez-rec-ev-254eee23"


def test_run_layout_failure_prints_the_last_log_lines_as_they_are():
    events = [
        ev.PhaseStarted("ready", "waiting for http://x/ready", 60),
        ev.StepProgress("ready", 1, 60, "loading [/models]"),
        ev.LogLines("ready", ("[rank0]: boom [/red]", "Traceback")),
        ev.PhaseFinished("ready", ok=False, detail="exited with code 3 [/x]"),
    ]
    out, renderer = render("RUN", events)
    assert out.endswith("--- last 2 log lines ---\n[rank0]: boom [/red]\nTraceback\n---\n"
                        "ready: failed exited with code 3 [/x]\n")
    assert renderer.started is None


def test_markup_like_text_is_printed_as_is_not_read_as_markup():
    events = [
        ev.PhaseStarted("build", "engine [/image]"),
        ev.StepProgress("build", 1, 2, "RUN echo [/x]"),
        ev.Notice("build", "warning", "slow [/disk]"),
        ev.PhaseFinished("build", detail="done [bold]"),
    ]
    out, _r = render("PACK", events)
    assert out == ("build: engine [/image]\nbuild: step 1/2: RUN echo [/x]\n"
                   "warning: slow [/disk]\nbuild: done [bold]\n")


@pytest.mark.parametrize("layout_name,name", [("PACK", "pack"), ("RUN", "run")])
def test_terminal_rendering_fits_80_columns(layout_name, name):
    import re

    out, _r = render(layout_name, recorded(name), terminal=True)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)  # styles
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", text)  # cursor moves
    bars = [line for line in text.splitlines() if "━" in line]
    assert bars and max(len(line) for line in bars) <= 80


def test_drive_returns_what_the_generator_returns():
    from ezrunner.core.events import drive

    def gen():
        yield ev.PhaseStarted("export", "x")
        return "the result"

    seen = []
    assert drive(gen(), seen.append) == "the result" and len(seen) == 1


# ---- the TUI run screen's message -------------------------------------------------------------------
def test_run_screen_progress_messages_come_from_the_fold():
    from ezrunner.tui.screens.run import RunScreen

    state = ProgressState()
    shown = []
    for event in recorded("run"):
        state.fold(event, 0.0)
        if isinstance(event, (ev.PhaseStarted, ev.BytesProgress, ev.StepProgress, ev.Notice)):
            m = RunScreen.Progress.of(state, event, event.phase)
            shown.append((m.phase, m.done, m.total, m.text, m.unit))
    assert ("verify", 0, 175872000, "verify mini.tar", "bytes") in shown
    assert ("load", 175872000, 175872000, "mini.tar", "bytes") in shown
    assert ("load", 4096, 4096, "layer 31b644fd0fec", "bytes") in shown
    assert ("start", -1, None, "started ez-rec-ev-254eee23 (transformers, no GPU) from "
            "ezrunner-test/run-mini-254eee23:1", "bytes") in shown
    assert shown[-1] == ("ready", 1, 60, 'request "GET /ready HTTP/1.1" 503 -', "s")
