"""Step 2: the target hardware - this machine's probe, a preset, free fields, or a
profile file written by ``ezrunner probe -o`` on the target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ezrunner.tui.format import dash, human_bytes
from ezrunner.tui.screens.base import EzScreen
from ezrunner.tui.widgets.steps import StepIndicator
from ezrunner.tui.widgets.toggles import MarkCheckbox as Checkbox
from ezrunner.tui.widgets.toggles import MarkRadioButton as RadioButton
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import (
    ContentSwitcher,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    RadioSet,
    Select,
    Static,
)

if TYPE_CHECKING:
    from ezrunner.core.hardware import HardwareProfile
    from ezrunner.tui.services import Services

MODES = (
    ("probe", "This machine"),
    ("preset", "Preset GPU"),
    ("manual", "Manual entry"),
    ("file", "Profile file"),
)


class HardwareScreen(EzScreen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back", id="hardware.back"),
        Binding("ctrl+n", "next", "Next", id="hardware.next"),
        Binding("ctrl+r", "reprobe", "Re-probe", id="hardware.reprobe"),
    ]

    class Probed(Message):
        def __init__(self, probe: HardwareProfile | None, error: str | None) -> None:
            super().__init__()
            self.probe = probe
            self.error = error

    class PresetsLoaded(Message):
        def __init__(self, presets: list[str]) -> None:
            super().__init__()
            self.presets = presets

    class ProfileReady(Message):
        def __init__(self, profile: HardwareProfile | None, error: str | None, for_this_machine: bool) -> None:
            super().__init__()
            self.profile = profile
            self.error = error
            self.for_this_machine = for_this_machine

    def compose(self) -> ComposeResult:
        s = self.app.wizard
        yield Header()
        yield StepIndicator(2)
        yield Static("", id="hw-target", markup=False)
        with Horizontal(id="hw-main"):
            with RadioSet(id="hw-mode"):
                for key, label in MODES:
                    yield RadioButton(label, value=(key == s.hardware_mode), id=f"mode-{key}")
            with ContentSwitcher(initial=f"panel-{s.hardware_mode}", id="hw-panels"):
                with Vertical(id="panel-probe"):
                    yield DataTable(id="hw-probe", cursor_type="row", show_cursor=False)
                    yield Static("Probing this machine…", id="hw-probe-note", markup=False)
                with VerticalScroll(id="panel-preset", classes="form"):
                    yield Label("GPU preset")
                    yield Select([], prompt="choose a GPU", id="hw-preset", compact=True)
                    yield Label("GPU count")
                    yield Input(s.gpu_count, id="hw-preset-count", restrict=r"[0-9]*", compact=True)
                with VerticalScroll(id="panel-manual", classes="form"):
                    yield Label("GPU count")
                    yield Input(s.gpu_count, id="hw-gpu-count", restrict=r"[0-9]*", compact=True)
                    yield Label("GPU memory (GiB per GPU)")
                    yield Input(s.gpu_memory, id="hw-gpu-memory", restrict=r"[0-9.]*", compact=True)
                    yield Label("Compute capability (e.g. 8.0)")
                    yield Input(s.compute_capability, id="hw-cc", restrict=r"[0-9.]*", compact=True)
                    yield Label("RAM (GiB)")
                    yield Input(s.ram, id="hw-ram", restrict=r"[0-9.]*", compact=True)
                    yield Checkbox("CPU only (no GPU)", s.cpu_only, id="hw-cpu-only", compact=True)
                with VerticalScroll(id="panel-file", classes="form"):
                    yield Label("Profile file written by `ezrunner probe -o FILE` on the target")
                    yield Input(s.profile_path, placeholder="/path/to/target.json", id="hw-file", compact=True)
        yield Static("", id="hw-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#hw-probe", DataTable)
        table.add_columns("item", "value")
        s = self.app.wizard
        if s.probe is None:
            self.run_probe()
        else:
            self._show_probe(s.probe)
        self.load_presets()
        self._update_target()
        self.query_one("#hw-mode", RadioSet).focus()

    # ---- probe ----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="probe", exit_on_error=False, description="hardware probe")
    def run_probe(self) -> None:
        try:
            probe = self.app.services.probe()
        except Exception as exc:  # noqa: BLE001 - NVML missing etc: shown, never a crash
            from ezrunner.tui.app import error_text

            self.post_message(self.Probed(None, error_text(exc)[0]))
            return
        self.post_message(self.Probed(probe, None))

    def on_hardware_screen_probed(self, message: Probed) -> None:
        note = self.query_one("#hw-probe-note", Static)
        if message.error:
            note.update(f"probe failed: {message.error}. Use a preset, manual entry or a profile file.")
            return
        self.app.wizard.probe = message.probe
        if message.probe is not None:
            self._show_probe(message.probe)

    def _show_probe(self, probe: HardwareProfile) -> None:
        table = self.query_one("#hw-probe", DataTable)
        table.clear()
        for gpu in probe.gpus:
            table.add_row(f"GPU {gpu.index}", str(dash(gpu.name, "?")))
            table.add_row(
                "",
                f"{human_bytes(gpu.memory_total)} ({human_bytes(gpu.memory_free)} free)"
                f" · cc {dash(gpu.compute_capability, '?')}",
            )
        if probe.gpus:
            table.add_row("driver", f"{dash(probe.driver_version)} · CUDA {dash(probe.cuda_driver_version)}")
        else:
            table.add_row("GPU", "none")
        table.add_row("CPU", f"{dash(probe.cpu_logical)} logical / {dash(probe.cpu_physical)} physical")
        table.add_row("RAM", f"{human_bytes(probe.ram_total)} ({human_bytes(probe.ram_available)} available)")
        if probe.disk_free is not None:
            table.add_row("disk free", human_bytes(probe.disk_free))
        self.query_one("#hw-probe-note", Static).update("; ".join(str(n) for n in probe.notes))

    def action_reprobe(self) -> None:
        self.query_one("#hw-probe-note", Static).update("Probing this machine…")
        self.run_probe()

    # ---- presets --------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="presets", exit_on_error=False, description="GPU presets")
    def load_presets(self) -> None:
        self.post_message(self.PresetsLoaded(self.app.services.presets()))

    def on_hardware_screen_presets_loaded(self, message: PresetsLoaded) -> None:
        select = self.query_one("#hw-preset", Select)
        select.set_options([(name, name) for name in message.presets])
        preset = self.app.wizard.preset
        if preset in message.presets:
            select.value = preset

    # ---- keeping the input ----------------------------------------------------------------------
    @on(RadioSet.Changed, "#hw-mode")
    def _mode_changed(self, event: RadioSet.Changed) -> None:
        mode = (event.pressed.id or "mode-probe").removeprefix("mode-")
        self.app.wizard.hardware_mode = mode
        self.query_one("#hw-panels", ContentSwitcher).current = f"panel-{mode}"
        self._update_target()

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        s = self.app.wizard
        field = {
            "hw-preset-count": "gpu_count",
            "hw-gpu-count": "gpu_count",
            "hw-gpu-memory": "gpu_memory",
            "hw-cc": "compute_capability",
            "hw-ram": "ram",
            "hw-file": "profile_path",
        }.get(event.input.id or "")
        if field:
            setattr(s, field, event.value)
            s.plan = None
        self._update_target()

    @on(Select.Changed, "#hw-preset")
    def _preset_changed(self, event: Select.Changed) -> None:
        self.app.wizard.preset = None if event.value is Select.BLANK else str(event.value)
        self._update_target()

    @on(Checkbox.Changed, "#hw-cpu-only")
    def _cpu_only(self, event: Checkbox.Changed) -> None:
        self.app.wizard.cpu_only = event.value
        self._update_target()

    def _update_target(self) -> None:
        s = self.app.wizard
        if s.hardware_mode == "probe":
            text = "Packing for THIS machine (its probe below)."
        elif s.hardware_mode == "preset":
            text = f"Packing for ANOTHER machine: {s.gpu_count or '?'} x {s.preset or '(choose a preset)'}."
        elif s.hardware_mode == "manual":
            text = (
                "Packing for ANOTHER machine: CPU only."
                if s.cpu_only
                else f"Packing for ANOTHER machine: {s.gpu_count or '?'} GPU x {s.gpu_memory or '?'} GiB, cc {s.compute_capability or '?'}."
            )
        else:
            text = f"Packing for ANOTHER machine: profile {s.profile_path or '(type its path)'}."
        self.query_one("#hw-target", Static).update(text)

    # ---- next -----------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_next(self) -> None:
        s = self.app.wizard
        self.query_one("#hw-status", Static).update("Preparing the target profile…")
        self.make_profile(
            HardwareForm(
                mode=s.hardware_mode,
                preset=s.preset,
                gpu_count=s.gpu_count,
                gpu_memory=s.gpu_memory,
                compute_capability=s.compute_capability,
                ram=s.ram,
                cpu_only=s.cpu_only,
                path=s.profile_path,
                probe=s.probe,
            )
        )

    @work(thread=True, exclusive=True, group="profile", exit_on_error=False, description="target profile")
    def make_profile(self, form: HardwareForm) -> None:
        from ezrunner.tui.app import error_text

        try:
            profile = form.profile(self.app.services)
        except Exception as exc:  # noqa: BLE001 - bad input: one line, stay here
            self.post_message(self.ProfileReady(None, error_text(exc)[0], form.mode == "probe"))
            return
        self.post_message(self.ProfileReady(profile, None, form.mode == "probe"))

    def on_hardware_screen_profile_ready(self, message: ProfileReady) -> None:
        status = self.query_one("#hw-status", Static)
        if message.error:
            status.update(f"error: {message.error}")
            return
        status.update("")
        s = self.app.wizard
        s.profile = message.profile
        s.for_this_machine = message.for_this_machine
        from ezrunner.tui.screens.review import ReviewScreen

        self.app.push_screen(ReviewScreen())


@dataclass(frozen=True)
class HardwareForm:
    """The hardware step's fields as entered (a copy the worker reads)."""

    mode: str  # probe | preset | manual | file
    preset: str | None
    gpu_count: str
    gpu_memory: str
    compute_capability: str
    ram: str
    cpu_only: bool
    path: str
    probe: HardwareProfile | None  # this machine's probe, when it already ran

    def profile(self, services: Services) -> HardwareProfile:
        """The target ``HardwareProfile`` these fields mean; a bad field raises
        ValueError (or the core's UsageError) naming it."""
        if self.mode == "probe":
            return self.probe if self.probe is not None else services.probe()
        if self.mode == "preset":
            if not self.preset:
                raise ValueError("choose a GPU preset")
            return services.profile_from_preset(self.preset, _int(self.gpu_count, "GPU count"))
        if self.mode == "manual":
            return services.manual_profile(
                gpu_count=0 if self.cpu_only else _int(self.gpu_count, "GPU count"),
                gpu_memory_gib=None if self.cpu_only else _float(self.gpu_memory, "GPU memory"),
                compute_capability=None if self.cpu_only else (self.compute_capability or None),
                ram_gib=_float(self.ram, "RAM") if self.ram else None,
            )
        if not self.path:
            raise ValueError("type the path of a profile file")
        return services.load_profile(self.path)


def _int(text: str, name: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{name}: must not be negative")
    return value


def _float(text: str, name: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}: must be positive")
    return value
