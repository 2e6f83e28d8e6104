"""Snapshots of every finished screen at 80x24 (fixed fake data, MockClock progress,
no version in the header). Update with ``pytest tests/test_tui_snapshots.py
--snapshot-update`` after checking the HTML report."""

from __future__ import annotations

import pytest
from ezrunner.tui.app import EzRunnerApp
from textual.widgets import Input


@pytest.fixture(autouse=True)
def _steady_cursor(monkeypatch):
    """Freeze the input cursor blink so the frames are stable."""
    monkeypatch.setattr(Input, "_toggle_cursor", lambda _self: None, raising=False)


def test_welcome(snap_compare):
    assert snap_compare(EzRunnerApp(show_version=False), terminal_size=(80, 24))


def test_chat_empty(snap_compare):
    async def run_before(pilot):
        pilot.app.action_open_chat("http://127.0.0.1:9/v1", "", "demo")
        await pilot.pause()

    assert snap_compare(EzRunnerApp(show_version=False), run_before=run_before, terminal_size=(80, 24))


def test_chat_error_in_conversation(snap_compare):
    async def run_before(pilot):
        pilot.app.action_open_chat("http://127.0.0.1:9/v1", "", "demo")
        await pilot.pause()
        await pilot.press(*"Hello", "enter")
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(EzRunnerApp(show_version=False), run_before=run_before, terminal_size=(80, 24))


# ---- the wizard, on the real core with fixed inputs ------------------------------------------
def _wizard_app(**kwargs):
    from support_tui import A100_80G, NO_HUB, FakeNvml
    from textual.clock import MockClock

    return EzRunnerApp(hub=NO_HUB, nvml=FakeNvml([A100_80G]), clock=MockClock(), show_version=False, **kwargs)


async def _settle(pilot, condition, what):
    from support_tui import until

    await until(pilot, condition, what=what)
    await pilot.pause()


def test_search_without_a_hub(snap_compare, private_caches):
    """(private_caches: other tests may leave HF_HUB_OFFLINE set in this process.)"""

    async def run_before(pilot):
        app = pilot.app
        app.wizard.sources = {"hf", "modelscope"}
        app.action_open_pack()
        await pilot.pause()
        app.screen.query_one("#search-query").value = "llama"
        await pilot.press("enter")
        await _settle(pilot, lambda: app.wizard.hub_notice_shown, "no-hub notice")

    assert snap_compare(_wizard_app(), run_before=run_before, terminal_size=(80, 24))


def test_search_results_from_a_recorded_hub(snap_compare, replay_hub, private_caches):
    from support_tui import A100_80G, FakeNvml
    from textual.clock import MockClock

    async def run_before(pilot):
        app = pilot.app
        app.wizard.sources = {"hf", "modelscope"}
        app.action_open_pack()
        await pilot.pause()
        app.screen.query_one("#search-query").value = "qwen2.5-0.5b"
        await pilot.press("enter")
        table = app.screen.query_one("#search-results")
        await _settle(pilot, lambda: table.row_count == 5, "results")
        await _settle(pilot, lambda: "Qwen2ForCausalLM" in str(app.screen.query_one("#search-details").content), "details")

    app = EzRunnerApp(hub=replay_hub, nvml=FakeNvml([A100_80G]), clock=MockClock(), show_version=False)
    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


def _prepare(app, model_dir, profile, for_this_machine=False):
    from ezrunner.core.discovery import local_details
    from ezrunner.core.hubs import ModelRef

    w = app.wizard
    w.model = ModelRef("local", str(model_dir))
    w.details = local_details(model_dir)
    w.profile = profile
    w.for_this_machine = for_this_machine
    w.output = "/bundles/tiny-llama.tar"


def test_hardware_preset(snap_compare, tiny_model_dir):
    async def run_before(pilot):
        from ezrunner.tui.screens.hardware import HardwareScreen

        app = pilot.app
        _prepare(app, tiny_model_dir, None)
        app.wizard.hardware_mode = "preset"
        app.wizard.preset = "A100-80G"
        app.wizard.gpu_count = "2"
        app.push_screen(HardwareScreen())
        await _settle(pilot, lambda: app.screen.query_one("#hw-preset").value == "A100-80G", "presets")

    assert snap_compare(_wizard_app(), run_before=run_before, terminal_size=(80, 24))


def test_review_plan(snap_compare, tiny_model_dir):
    async def run_before(pilot):
        from ezrunner.core.hardware import preset_profile
        from ezrunner.tui.screens.review import ReviewScreen

        app = pilot.app
        _prepare(app, tiny_model_dir, preset_profile("T4", 1, ram_gib=64))
        app.push_screen(ReviewScreen())
        await _settle(pilot, lambda: app.wizard.plan is not None, "plan")

    assert snap_compare(_wizard_app(), run_before=run_before, terminal_size=(80, 24))


def test_review_no_fit_confirmation(snap_compare, tiny_model_dir):
    async def run_before(pilot):
        from ezrunner.core.hardware import manual_profile
        from ezrunner.tui.dialogs.confirm import ConfirmDialog
        from ezrunner.tui.screens.review import ReviewScreen

        app = pilot.app
        _prepare(app, tiny_model_dir, manual_profile(gpu_count=0, ram_gib=0.5))
        app.push_screen(ReviewScreen())
        await _settle(pilot, lambda: app.wizard.plan is not None, "plan")
        await pilot.press("ctrl+n")
        await _settle(pilot, lambda: isinstance(app.screen, ConfirmDialog), "dialog")

    assert snap_compare(_wizard_app(), run_before=run_before, terminal_size=(80, 24))


def test_build_progress(snap_compare):
    async def run_before(pilot):
        from ezrunner.core import events as ev
        from ezrunner.core.pack import PackOptions
        from ezrunner.tui.build_job import BuildJob
        from ezrunner.tui.screens.build import BuildScreen

        app = pilot.app
        clock = app.clock
        job = BuildJob(app, PackOptions(model="m", output="/bundles/m.tar"))
        job.progress.state = "running"
        app.build_job = job
        clock.set_time(0.0)
        job.deliver([
            ev.PhaseStarted("download", "model org/m", 3 * 2**30),
            ev.BytesProgress("download", "model-00001.safetensors", 0, 2 * 2**30),
        ])
        clock.set_time(10.0)
        job.deliver([
            ev.BytesProgress("download", "model-00001.safetensors", 2 * 2**30, 2 * 2**30),
            ev.BytesProgress("download", "model-00002.safetensors", 512 * 2**20, 2**30),
            ev.PhaseStarted("build", "engine image: transformers on cpu"),
            ev.StepProgress("build", 3, 7, "RUN pip install --no-index -r requirements.txt"),
            ev.LogLines("build", tuple(f"Step {i}/7 : layer {i}" for i in range(1, 4))),
            ev.LogLines("build", ("Processing /wheels/torch-2.13.0-cp311-linux_x86_64.whl",)),
        ])
        screen = BuildScreen(job)
        app.push_screen(screen)
        await pilot.pause()

    assert snap_compare(_wizard_app(), run_before=run_before, terminal_size=(80, 24))


def test_done(snap_compare):
    async def run_before(pilot):
        from ezrunner.core.bundle.format import BundleManifest
        from ezrunner.core.pack import PackResult
        from ezrunner.tui.screens.done import DoneScreen

        tag = "ezrunner/tiny-llama:transformers-cpu-0123456789ab"
        result = PackResult(
            bundle="/bundles/tiny-llama.tar",
            parts=["/bundles/tiny-llama.tar.part-001", "/bundles/tiny-llama.tar.part-002"],
            sidecar="/bundles/tiny-llama.tar.sha256",
            sha256="0123456789abcdef" * 4,
            size=1_412_345_678,
            image_tag=tag,
            image_id="sha256:" + "ab" * 32,
            engine_image="ezrunner-engine/transformers-cpu:0123456789ab",
            engine_reused=True,
            manifest=BundleManifest(model="tiny-llama", served_model_name="tiny-llama", engine="transformers",
                                    device="cpu", image_id="sha256:" + "ab" * 32, image_tag=tag),
        )
        pilot.app.push_screen(DoneScreen(result))
        await pilot.pause()

    assert snap_compare(_wizard_app(), run_before=run_before, terminal_size=(80, 24))


def test_run_screen_docker_down_with_logs(snap_compare, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    folder = tmp_path / "bundles"
    (folder / "old").mkdir(parents=True)
    for name in ("tiny-llama.tar", "big.tar.part-001", "big.tar.part-002", "tiny-llama.tar.sha256"):
        (folder / name).write_bytes(b"")

    async def run_before(pilot):
        from ezrunner.tui.screens.run import RunScreen
        from ezrunner.tui.widgets.log_tail import LogTail

        app = pilot.app
        app.action_open_run()
        screen = app.screen
        await _settle(pilot, lambda: screen.docker_problem and screen.query_one("#run-ps").row_count == 1, "ps")
        await pilot.pause(0.1)  # the DataTable sizes its columns on the next refresh
        await _settle(pilot, lambda: screen.query_one("#run-tree").root.children, "tree")
        log = screen.query_one(LogTail)
        log.append_lines([f"INFO:     127.0.0.1 - \"POST /v1/chat/completions HTTP/1.1\" 200 #{i}" for i in range(6)])
        log.append_lines(["ERROR:    request chatcmpl-1 failed in the engine"])
        log.focus()
        await pilot.press("slash", *"ERROR", "enter")
        assert isinstance(screen, RunScreen)

    app = _wizard_app(bundle_dir=str(folder))
    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


def test_review_no_fit_without_colour(snap_compare, tiny_model_dir, monkeypatch):
    """NO_COLOR: the verdict, the warnings' severity and the current step stay readable."""
    monkeypatch.setenv("NO_COLOR", "1")

    async def run_before(pilot):
        from ezrunner.core.hardware import manual_profile
        from ezrunner.tui.screens.review import ReviewScreen

        app = pilot.app
        _prepare(app, tiny_model_dir, manual_profile(gpu_count=0, ram_gib=0.5))
        app.push_screen(ReviewScreen())
        await _settle(pilot, lambda: app.wizard.plan is not None, "plan")

    assert snap_compare(_wizard_app(), run_before=run_before, terminal_size=(80, 24))
