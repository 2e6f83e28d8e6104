"""Step 5: the bundle - path, size, sha256, parts - and the exact commands to
carry it to the target and run it there."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from ezrunner.tui.format import human_bytes
from ezrunner.tui.screens.base import EzScreen
from ezrunner.tui.widgets.steps import StepIndicator
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

if TYPE_CHECKING:
    from ezrunner.core.pack import PackResult


def bundle_lines(result: PackResult) -> list[str]:
    """Path, size, sha256, image and parts of the bundle."""
    lines = [
        f"path    {result.bundle}",
        f"size    {human_bytes(result.size)} ({result.size} bytes)",
        f"sha256  {result.sha256 or '-'}",
    ]
    if result.image_tag:
        lines.append(f"image   {result.image_tag}")
    if result.parts:
        lines.append(f"parts   {len(result.parts)}: " + ", ".join(Path(p).name for p in result.parts))
    else:
        lines.append("parts   none (one file)")
    return lines


def target_commands(result: PackResult) -> list[str]:
    path = Path(result.bundle or "BUNDLE.tar")
    name = path.name
    q = shlex.quote
    lines = ["# 1. copy to the target (USB stick, share or scp)"]
    if result.parts:
        parts = " ".join(q(Path(p).name) for p in result.parts)
        lines.append(f"scp {parts} {q(name + '.sha256')} TARGET:/srv/bundles/")
        lines.append("# 2. on the target: verify, load and start (parts are joined on the fly)")
        lines.append(f"ezrunner run /srv/bundles/{q(Path(result.parts[0]).name)}")
        lines.append("# without ezrunner:")
        lines.append(f"cat {q(name)}.part-* > {q(name)} && sha256sum -c {q(name + '.sha256')} && docker load -i {q(name)}")
    else:
        lines.append(f"scp {q(name)} {q(name + '.sha256')} TARGET:/srv/bundles/")
        lines.append("# 2. on the target: verify, load and start")
        lines.append(f"ezrunner run /srv/bundles/{q(name)}")
        lines.append("# without ezrunner:")
        lines.append(f"sha256sum -c {q(name + '.sha256')} && docker load -i {q(name)}")
    return lines


class DoneScreen(EzScreen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back", id="done.back"),
        Binding("r", "app.open_run", "Run it here", id="done.run"),
        Binding("n", "new", "New pack", id="done.new"),
    ]

    def __init__(self, result: PackResult) -> None:
        super().__init__()
        self.result = result

    def compose(self) -> ComposeResult:
        yield Header()
        yield StepIndicator(5)
        with VerticalScroll(id="done-main"):
            yield Static("Bundle ready.", id="done-title")
            yield Static("\n".join(bundle_lines(self.result)), id="done-facts", markup=False)
            yield Static("Commands for the target:", classes="section-title")
            yield Static("\n".join(target_commands(self.result)), id="done-commands", markup=False)
        yield Footer()

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_new(self) -> None:
        from ezrunner.tui.state import WizardState

        self.app.wizard = WizardState()
        self.app.build_job = None
        while len(self.app.screen_stack) > 1:
            self.app.pop_screen()
        self.app.action_open_pack()
