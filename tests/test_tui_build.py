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
from support_tui import NO_HUB, FakeNvml, screen_text, type_into, until
from textual.widgets import Input, Select


def make_app() -> EzRunnerApp:
    return EzRunnerApp(hub=NO_HUB, nvml=FakeNvml(missing=True), show_version=False)


async def to_review(pilot, app, model: Path, *, manual_ram: str | None = None) -> ReviewScreen:
    await pilot.press("p")
    await until(pilot, lambda: isinstance(app.screen, SearchScreen), what="search")
    await type_into(pilot, app, "#search-query", str(model))
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, HardwareScreen), what="hardware")
    if manual_ram is not None:
        app.screen.query_one("#mode-manual").value = True
        await pilot.pause()
        app.screen.query_one("#hw-cpu-only").value = True
        await type_into(pilot, app, "#hw-ram", manual_ram)
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
        assert app.wizard.plan.fits is False
        assert "NO - does not fit" in screen_text(app)
        out = tmp_path / "out"
        out.mkdir()
        await type_into(pilot, app, "#opt-output", str(out / "b.tar"))

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
    from ezrunner.core.pack import PackOptions
    from ezrunner.tui.build_job import BuildJob

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        job = BuildJob(app, PackOptions(model="unused", output=str(tmp_path / "b.tar")))
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
        await until(pilot, lambda: app.wizard.plan.engine == "transformers", what="plan")
        target = tmp_path / "wizard.tar"
        await type_into(pilot, app, "#opt-output", str(target))
        await type_into(pilot, app, "#opt-base", base_image)
        await pilot.press("ctrl+n")
        # With the engine image cached the export can finish before the first check,
        # so the build screen may already have handed over to the Done screen.
        await until(pilot, lambda: isinstance(app.screen, (BuildScreen, DoneScreen)), what="build screen")
        await until(pilot, lambda: isinstance(app.screen, DoneScreen), timeout=900, what="done screen")
        done = app.screen
        result = done.result
        assert Path(result.bundle) == target and target.is_file() and result.parts == []
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        assert result.sha256 == digest
        assert (tmp_path / "wizard.tar.sha256").read_text().split()[0] == digest
        assert result.size == target.stat().st_size
        text = screen_text(app)
        assert digest in text and "ezrunner run /srv/bundles/wizard.tar" in text
        assert "docker load -i wizard.tar" in text
        job = app.build_job
        assert job.progress.finished.get("export") is True
        assert job.progress.totals["export"].done > 0


# ---- cancelling a real pack while it downloads from a (slow, local) hub -------------------------
# huggingface_hub takes its endpoint from HF_ENDPOINT when it is imported, so the app
# runs in a fresh process with HF_ENDPOINT pointed at the replay hub of
# tests/test_pack_download.py, served slowly so that the download lasts seconds.
CANCEL_SCRIPT = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from support_tui import FakeNvml, until
from ezrunner.core.hardware import manual_profile
from ezrunner.core.hubs import ModelRef
from ezrunner.tui.app import EzRunnerApp
from ezrunner.tui.dialogs.confirm import ConfirmDialog
from ezrunner.tui.screens.build import BuildScreen

async def main():
    out_dir = sys.argv[2]
    app = EzRunnerApp(hub={"hf": sys.argv[3]}, nvml=FakeNvml(missing=True), show_version=False)
    async with app.run_test(size=(80, 24)) as pilot:
        w = app.wizard
        w.model, w.engine, w.output = ModelRef("hf", "ezr/tiny-llama"), "transformers", out_dir + "/hub.tar"
        w.profile = manual_profile(gpu_count=0, ram_gib=16)
        app.push_screen(BuildScreen())
        await until(pilot, lambda: app.build_job and app.build_job.progress.phase == "download"
                    and getattr(app.build_job.progress.totals.get("download"), "total", None),
                    timeout=60, what="download")
        job = app.build_job
        seen = job.progress.totals["download"].total
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="dialog")
        await pilot.press("y")
        await until(pilot, lambda: job.progress.state != "running", timeout=60, what="the end")
        print("RESULT " + json.dumps({"state": job.progress.state, "phase": job.progress.phase,
              "error": job.progress.error, "download_total": seen,
              "status": str(app.screen.query_one("#build-status").content), "running": app.is_running}))

asyncio.run(main())
"""


@pytest.fixture
def slow_hub(tiny_model_dir):
    import time

    from conftest import local_http_server
    from test_pack_download import _Hub

    class SlowHub(_Hub):
        def _send(self, code, body=b"", headers=None, head=False):
            if head or len(body) < 64 * 1024:
                return super()._send(code, body, headers, head)
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(0, len(body), 8192):  # ~80 KB/s: a download of seconds
                    self.wfile.write(body[i:i + 8192])
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass

    SlowHub.files = {p.relative_to(tiny_model_dir).as_posix(): p.read_bytes()
                     for p in tiny_model_dir.rglob("*") if p.is_file()}
    SlowHub.log = []
    with local_http_server(SlowHub) as url:
        yield url


def test_cancelling_a_build_while_downloading_stops_and_leaves_no_bundle(slow_hub, tmp_path):
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env.update(HF_ENDPOINT=slow_hub, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1",
               EZRUNNER_HOME=str(tmp_path / "home"))
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.run([sys.executable, "-c", CANCEL_SCRIPT, tests_dir, str(out), slow_hub],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["state"] == "cancelled", result
    assert result["phase"] == "download", result
    assert result["download_total"] > 64 * 1024
    assert result["status"].startswith("CANCELLED"), result
    assert result["running"] is True
    assert leftovers(out) == []

