"""The pack wizard's first three steps on the real core (discovery, hardware,
plan), with the two seams faked at the app's constructor: the hub endpoints
(a closed port: no hub is reachable) and NVML."""

from __future__ import annotations

import pytest
from ezrunner.core.hubs import ModelRef
from ezrunner.tui.app import EzRunnerApp
from ezrunner.tui.screens.hardware import HardwareScreen
from ezrunner.tui.screens.review import ReviewScreen
from ezrunner.tui.screens.search import NO_HUB as NO_HUB_TEXT
from ezrunner.tui.screens.search import SearchScreen
from support_tui import A100_80G, NO_HUB, FakeNvml, screen_text, type_into, until
from textual.widgets import DataTable, Input, Select


def make_app(nvml=None, **kwargs) -> EzRunnerApp:
    return EzRunnerApp(hub=NO_HUB, nvml=nvml if nvml is not None else FakeNvml([A100_80G]), show_version=False, **kwargs)


async def open_search(pilot, app) -> SearchScreen:
    await pilot.press("p")
    await until(pilot, lambda: isinstance(app.screen, SearchScreen), what="search screen")
    return app.screen


async def pick_model_path(pilot, app, path) -> HardwareScreen:
    await type_into(pilot, app, "#search-query", str(path))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, HardwareScreen), what="hardware screen")
    return app.screen


def plan_text(app) -> str:
    return screen_text(app)


def static_text(app, selector: str) -> str:
    return str(app.screen.query_one(selector).content)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_local_model_probe_and_plan(tiny_model_dir, size):
    app = make_app()
    async with app.run_test(size=size) as pilot:
        search = await open_search(pilot, app)
        # a query with no hub: said once, local sources still searched
        await type_into(pilot, app, "#search-query", "llama")
        await pilot.press("enter")
        await until(pilot, lambda: app.wizard.hub_notice_shown, what="the no-hub notice")
        assert NO_HUB_TEXT[:30] in static_text(app, "#search-notice")
        await pilot.press("enter")
        await until(pilot, lambda: not search.workers._workers or all(w.is_finished for w in search.workers._workers), what="search again")  # noqa: SLF001
        assert sum("hub unreachable" in (n.title or "") for n in app._notifications) == 1  # noqa: SLF001

        hardware = await pick_model_path(pilot, app, tiny_model_dir)
        assert app.wizard.details.config.architecture == "LlamaForCausalLM"
        # the probe of "this machine" through the fake NVML
        await until(pilot, lambda: hardware.query_one("#hw-probe", DataTable).row_count > 2, what="probe table")
        text = screen_text(app)
        assert "NVIDIA A100-SXM4-80GB" in text and "cc 8.0" in text
        assert "Packing for THIS machine" in text

        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.wizard.plan is not None, what="plan")
        plan = app.wizard.plan
        assert plan.engine == "vllm" and plan.device == "cuda" and plan.fits is True
        assert "vllm" in plan_text(app)
        assert plan.reasons

        # live recompute: engine, then context length
        app.screen.query_one("#opt-engine", Select).value = "transformers"
        await until(pilot, lambda: app.wizard.plan.engine == "transformers", what="engine recompute")
        assert "transformers" in plan_text(app)
        await type_into(pilot, app, "#opt-max-len", "512")
        await until(pilot, lambda: app.wizard.plan.max_model_len == 512, what="context recompute")
        assert "512" in plan_text(app)
        app.screen.query_one("#opt-dtype", Select).value = "float32"
        await until(pilot, lambda: app.wizard.plan.dtype == "float32", what="dtype recompute")


async def test_back_navigation_keeps_what_was_entered(tiny_model_dir):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_search(pilot, app)
        hardware = await pick_model_path(pilot, app, tiny_model_dir)
        # manual entry: 2 GPUs of 24 GiB, cc 8.6, RAM 64
        hardware.query_one("#mode-manual").value = True
        await pilot.pause()
        await type_into(pilot, app, "#hw-gpu-count", "2")
        await type_into(pilot, app, "#hw-gpu-memory", "24")
        await type_into(pilot, app, "#hw-cc", "8.6")
        await type_into(pilot, app, "#hw-ram", "64")
        assert "ANOTHER machine: 2 GPU x 24 GiB, cc 8.6" in screen_text(app)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.wizard.plan is not None, what="plan")
        assert app.wizard.plan.tensor_parallel_size >= 1
        assert "ANOTHER machine" in screen_text(app)
        await type_into(pilot, app, "#opt-max-len", "1024")
        await until(pilot, lambda: app.wizard.plan.max_model_len == 1024, what="recompute")

        await pilot.press("escape")  # back to hardware: the same values
        await until(pilot, lambda: isinstance(app.screen, HardwareScreen), what="hardware again")
        assert app.screen.query_one("#hw-gpu-memory", Input).value == "24"
        assert app.screen.query_one("#hw-cc", Input).value == "8.6"
        await pilot.press("escape")  # back to search: the typed path
        await until(pilot, lambda: isinstance(app.screen, SearchScreen), what="search again")
        assert app.screen.query_one("#search-query", Input).value == str(tiny_model_dir)

        # forward again: fresh screens restore the wizard's state
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, HardwareScreen), what="hardware, forward")
        assert app.screen.query_one("#mode-manual").value is True
        assert app.screen.query_one("#hw-gpu-count", Input).value == "2"
        assert app.screen.query_one("#hw-ram", Input).value == "64"
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen), what="review, forward")
        assert app.screen.query_one("#opt-max-len", Input).value == "1024"
        await until(pilot, lambda: app.wizard.plan.max_model_len == 1024, what="plan kept")


async def test_profile_file_for_another_machine(tiny_model_dir, tmp_path):
    from ezrunner.core.hardware import preset_profile, save_profile

    target = tmp_path / "t4-target.json"
    save_profile(preset_profile("T4", 1), target)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_search(pilot, app)
        hardware = await pick_model_path(pilot, app, tiny_model_dir)
        hardware.query_one("#mode-file").value = True
        await pilot.pause()
        await type_into(pilot, app, "#hw-file", str(target))
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.wizard.plan is not None, what="plan")
        assert app.wizard.for_this_machine is False
        plan = app.wizard.plan
        # T4: compute capability 7.5 -> no bfloat16
        assert plan.dtype == "float16"
        assert "BF16_UNSUPPORTED" in plan.warning_codes
        assert "BF16_UNSUPPORTED" in static_text(app, "#review-reasons")


async def test_bad_manual_values_and_missing_profile_are_one_line_errors(tiny_model_dir, tmp_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_search(pilot, app)
        hardware = await pick_model_path(pilot, app, tiny_model_dir)
        hardware.query_one("#mode-manual").value = True
        await pilot.pause()
        await type_into(pilot, app, "#hw-gpu-count", "1")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "error:" in static_text(app, "#hw-status"), what="error line")
        assert "GPU memory" in static_text(app, "#hw-status")
        assert isinstance(app.screen, HardwareScreen)

        hardware.query_one("#mode-file").value = True
        await pilot.pause()
        await type_into(pilot, app, "#hw-file", str(tmp_path / "nope.json"))
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "nope.json" in static_text(app, "#hw-status"), what="file error")
        assert isinstance(app.screen, HardwareScreen)
        assert app.errors_shown == []


async def test_nvml_missing_still_plans_for_the_cpu(tiny_model_dir):
    app = make_app(nvml=FakeNvml(missing=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await open_search(pilot, app)
        hardware = await pick_model_path(pilot, app, tiny_model_dir)
        await until(pilot, lambda: app.wizard.probe is not None, what="probe")
        assert app.wizard.probe.gpus == []
        assert "no NVIDIA driver" in screen_text(app)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.wizard.plan is not None, what="plan")
        assert app.wizard.plan.device == "cpu" and app.wizard.plan.engine == "transformers"
        assert hardware is not None


async def test_demo_model_offline(tmp_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_search(pilot, app)
        await pilot.press("ctrl+d")
        await until(pilot, lambda: isinstance(app.screen, HardwareScreen), timeout=60, what="demo model chosen")
        assert app.wizard.details.config.architecture == "LlamaForCausalLM"
        assert app.wizard.model.source == "local" and app.wizard.model.id.endswith("demo-model")


async def test_bad_path_is_reported_in_the_details_pane(tmp_path):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_search(pilot, app)
        await type_into(pilot, app, "#search-query", str(tmp_path / "missing-model"))
        await pilot.press("enter")
        await until(pilot, lambda: "model folder not found" in static_text(app, "#search-details"), what="error")
        assert isinstance(app.screen, SearchScreen)


# ---- a reachable hub: the recorded API responses of tests/fixtures/hub, replayed ----------------
async def test_hub_search_details_and_plan_from_recorded_responses(replay_hub, private_caches):
    app = EzRunnerApp(hub=replay_hub, nvml=FakeNvml([A100_80G]), show_version=False)
    async with app.run_test(size=(120, 40)) as pilot:
        search = await open_search(pilot, app)
        search.query_one("#src-local").value = False
        await type_into(pilot, app, "#search-query", "qwen2.5-0.5b")
        await pilot.press("enter")
        table = search.query_one("#search-results", DataTable)
        await until(pilot, lambda: table.row_count > 0, what="results")
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert any(r[0] == "Qwen/Qwen2.5-0.5B-Instruct" and r[1] == "hf" for r in rows), rows
        assert any(r[1] == "ms" for r in rows), rows
        assert not app.wizard.hub_notice_shown
        hf_row = next(i for i, r in enumerate(rows) if r[0] == "Qwen/Qwen2.5-0.5B-Instruct" and r[1] == "hf")
        table.focus()
        table.move_cursor(row=hf_row)
        await until(pilot, lambda: "Qwen2ForCausalLM" in static_text(app, "#search-details"), what="details pane")
        assert "rev " in static_text(app, "#search-details")
        # the format column is filled from the details of the highlighted model
        await until(pilot, lambda: table.get_row_at(hf_row)[4] == "safetensors", what="format cell")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HardwareScreen), what="hardware")
        assert app.wizard.model == ModelRef("hf", "Qwen/Qwen2.5-0.5B-Instruct")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.wizard.plan is not None, what="plan")
        plan = app.wizard.plan
        assert plan.engine == "vllm" and plan.fits is True
        assert plan.weights_bytes > 500_000_000  # ~0.5 B parameters in bfloat16, from hub metadata


async def test_modelscope_pick_reaches_the_modelscope_download(replay_hub, private_caches, monkeypatch, tmp_path):
    """A ModelScope result picked in the wizard is packed from ModelScope (its source
    travels in the ModelRef). It used to fail with "not a valid model id:
    'modelscope:...'" before any download (issue 12). The replay hub has the file
    list but not the 1 GB weights, so the download itself fails - on ModelScope."""
    from ezrunner.core.hardware import manual_profile
    from ezrunner.tui.screens.build import BuildScreen
    from test_discovery import _Replay

    monkeypatch.setenv("EZRUNNER_HOME", str(tmp_path / "home"))
    app = EzRunnerApp(hub=replay_hub, nvml=FakeNvml([A100_80G]), docker=object(), show_version=False)
    async with app.run_test(size=(120, 40)) as pilot:
        search = await open_search(pilot, app)
        search.query_one("#src-local").value = False
        search.query_one("#src-hf").value = False
        await type_into(pilot, app, "#search-query", "qwen2.5-0.5b")
        await pilot.press("enter")
        table = search.query_one("#search-results", DataTable)
        await until(pilot, lambda: table.row_count > 0, what="results")
        row = next(i for i in range(table.row_count) if table.get_row_at(i)[0] == "Qwen/Qwen2.5-0.5B-Instruct")
        assert table.get_row_at(row)[1] == "ms"
        table.focus()
        table.move_cursor(row=row)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HardwareScreen), what="hardware")
        assert app.wizard.model == ModelRef("modelscope", "Qwen/Qwen2.5-0.5B-Instruct")
        w = app.wizard
        w.engine, w.output = "transformers", str(tmp_path / "ms.tar")
        w.profile = manual_profile(gpu_count=0, ram_gib=16)
        _Replay.log.clear()
        app.push_screen(BuildScreen())
        await until(pilot, lambda: app.build_job and app.build_job.progress.state != "running", timeout=60, what="the end")
        error = app.build_job.progress.error or ""
        assert "not a valid model id" not in error
        assert "from ModelScope failed" in error, error
        downloads = [r for r in _Replay.log if r["query"].get("FilePath") == ["model.safetensors"]]
        assert downloads and downloads[0]["path"] == "/api/v1/models/Qwen/Qwen2.5-0.5B-Instruct/repo"
        assert not list(tmp_path.glob("ms.tar*"))
