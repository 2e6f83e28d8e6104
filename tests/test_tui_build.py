"""Build/export and Done: the whole pack wizard through the real Docker engine,
cancelling a build, a no-fit plan that needs confirmation, and Docker being down.
Seams faked at the app's constructor: only the hub (a closed port) and NVML."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from ezrunner.tui.app import EzRunnerApp
from ezrunner.tui.dialogs.confirm import ConfirmDialog
from ezrunner.tui.screens.build import BuildScreen
from ezrunner.tui.screens.done import DoneScreen
from ezrunner.tui.screens.hardware import HardwareScreen
from ezrunner.tui.screens.review import ReviewScreen
from ezrunner.tui.screens.search import SearchScreen
from ezrunner.tui.widgets.log_tail import LogTail
from support_tui import NO_HUB, FakeNvml, screen_text, until
from textual.widgets import Input, Select


def make_app() -> EzRunnerApp:
    return EzRunnerApp(hub=NO_HUB, nvml=FakeNvml(missing=True), show_version=False)


async def set_input(pilot, app, selector: str, text: str) -> None:
    box = app.screen.query_one(selector, Input)
    box.focus()
    box.value = ""
    if len(text) > 8:  # long paths: set at once (typing is one key event per character)
        box.value = text
        await pilot.pause()
    elif text:
        await pilot.press(*text)


async def to_review(pilot, app, model: Path, *, manual_ram: str | None = None) -> ReviewScreen:
    await pilot.press("p")
    await until(pilot, lambda: isinstance(app.screen, SearchScreen), what="search")
    await set_input(pilot, app, "#search-query", str(model))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, HardwareScreen), what="hardware")
    if manual_ram is not None:
        app.screen.query_one("#mode-manual").value = True
        await pilot.pause()
        app.screen.query_one("#hw-cpu-only").value = True
        await set_input(pilot, app, "#hw-ram", manual_ram)
    await pilot.press("ctrl+n")
    await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.wizard.plan is not None, what="plan")
    return app.screen


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_no_fit_plan_needs_confirmation_and_docker_down_fails_in_one_line(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        review = await to_review(pilot, app, tiny_model_dir, manual_ram="0.5")
        assert app.wizard.plan["fits"] is False
        assert "NO - does not fit" in screen_text(app)
        out = tmp_path / "out"
        out.mkdir()
        await set_input(pilot, app, "#opt-output", str(out / "b.tar"))

        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirmation")
        assert "does NOT fit" in screen_text(app)
        await pilot.press("n")
        await until(pilot, lambda: app.screen is review, what="back on review")
        assert app.build_job is None

        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirmation again")
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, BuildScreen), what="build screen")
        await until(pilot, lambda: app.build_job.progress.state == "failed", timeout=60, what="the failure")
        progress = app.build_job.progress
        assert "Docker" in progress.error
        assert "\n" not in progress.error
        assert "FAILED" in str(app.screen.query_one("#build-status").content)
        assert app.is_running and app.errors_shown == []
        assert leftovers(out) == []
        # Esc goes back to the review with everything kept
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is review, what="review after failure")
        assert review.query_one("#opt-output", Input).value == str(out / "b.tar")


async def test_cancel_asks_first_and_no_keeps_building(tmp_path):
    """The cancel dialog on a running job: "n" changes nothing, "y" cancels."""
    from ezrunner.tui.build_job import BuildJob

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        job = BuildJob(app, {"model": "unused", "output": str(tmp_path / "b.tar")})
        job.progress.state = "running"  # as if started; no worker runs in this test
        app.build_job = job
        build = BuildScreen(job)
        app.push_screen(build)
        await until(pilot, lambda: app.screen is build, what="build screen")
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirmation")
        assert "Cancel the build?" in screen_text(app)
        await pilot.press("n")
        await until(pilot, lambda: app.screen is build, what="back")
        assert not job._cancel.is_set()  # noqa: SLF001
        await pilot.press("escape")  # Esc on a running build also asks
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirmation on Esc")
        await pilot.press("y")
        await until(pilot, lambda: job._cancel.is_set(), what="cancel requested")  # noqa: SLF001
        assert app.screen is build


@pytest.mark.slow
async def test_whole_pack_wizard_to_done(packed_bundle, base_image, tiny_model_dir, tmp_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await to_review(pilot, app, tiny_model_dir)
        app.screen.query_one("#opt-engine", Select).value = "transformers"
        await until(pilot, lambda: app.wizard.plan["engine"] == "transformers", what="plan")
        target = tmp_path / "wizard.tar"
        await set_input(pilot, app, "#opt-output", str(target))
        await set_input(pilot, app, "#opt-base", base_image)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, BuildScreen), what="build screen")
        await until(pilot, lambda: isinstance(app.screen, DoneScreen), timeout=900, what="done screen")
        done = app.screen
        facts = done.facts
        assert Path(facts["path"]) == target and target.is_file()
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        assert facts["sha256"] == digest
        assert (tmp_path / "wizard.tar.sha256").read_text().split()[0] == digest
        assert facts["size"] == target.stat().st_size
        text = screen_text(app)
        assert digest in text and "ezrunner run /srv/bundles/wizard.tar" in text
        assert "docker load -i wizard.tar" in text
        job = app.build_job
        assert job.progress.finished.get("export") is True
        assert job.progress.totals["export"].done > 0


@pytest.mark.slow
async def test_cancelling_a_build_asks_then_stops_and_cleans_up(packed_bundle, base_image, tmp_path, tmp_path_factory):
    """A real pack, cancelled through the dialog: the core stops and leaves nothing."""
    from ezrunner.core.demo_model import write_demo_model

    model = tmp_path_factory.getbasetemp() / "tui-small-model" / "small-llama"
    if not model.exists():
        write_demo_model(model, preset="small")
    out = tmp_path / "out"
    out.mkdir()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        review = await to_review(pilot, app, model)
        app.screen.query_one("#opt-engine", Select).value = "transformers"
        await until(pilot, lambda: app.wizard.plan["engine"] == "transformers", what="plan")
        await set_input(pilot, app, "#opt-output", str(out / "small.tar"))
        await set_input(pilot, app, "#opt-base", base_image)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, BuildScreen), what="build screen")
        job = app.build_job
        # cancel at once: with the engine image cached, the rest of this pack (writing
        # ~1.4 GB of engine layers and the model) leaves a window of seconds
        build = app.screen
        build.query_one(LogTail).focus()
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="cancel confirmation")
        await pilot.press("y")
        await until(pilot, lambda: job.progress.state in ("cancelled", "done"), timeout=120, what="the end")
        assert job.progress.state == "cancelled", "the export finished before the cancel landed"
        assert "CANCELLED" in str(build.query_one("#build-status").content)
        assert leftovers(out) == []
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is review, what="review after cancel")
