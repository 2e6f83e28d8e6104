"""Step 5: the bundle - path, size, sha256, parts - and the exact commands to
carry it to the target and run it there."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ezrunner.tui.format import human_bytes, pick
from ezrunner.tui.screens.base import EzScreen
from ezrunner.tui.widgets.steps import StepIndicator
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static


def bundle_facts(result: dict[str, Any]) -> dict[str, Any]:
    """Path, size, sha256 and parts: from the pack result, else from the files the
    pack wrote (sidecar and parts, read with ``ezrunner.core.bundle.reader``)."""
    from ezrunner.core.bundle import reader

    path = str(pick(result, "bundle", "path", "output", "bundle_path", default=""))
    sha = pick(result, "sha256", "digest")
    parts = [str(p) for p in (pick(result, "parts", default=[]) or [])]
    size = pick(result, "size", "bytes", "size_bytes", "bundle_bytes")
    if path:
        if not parts:
            try:
                source = reader.find_bundle(path)
                parts = [str(p) for p in source.parts] if source.split else []
            except Exception:  # noqa: BLE001
                parts = []
        if sha is None:
            try:
                sha = reader.read_sidecar(reader.find_bundle(path)).sha256
            except Exception:  # noqa: BLE001
                sha = None
        if size is None:
            files = [Path(p) for p in parts] or [Path(path)]
            try:
                size = sum(f.stat().st_size for f in files)
            except OSError:
                size = None
    return {"path": path, "sha256": sha, "parts": parts, "size": size, "image_tag": pick(result, "image_tag")}


def target_commands(facts: dict[str, Any]) -> list[str]:
    path = Path(facts["path"] or "BUNDLE.tar")
    name = path.name
    q = shlex.quote
    lines = ["# 1. copy to the target (USB stick, share or scp)"]
    if facts["parts"]:
        parts = " ".join(q(Path(p).name) for p in facts["parts"])
        lines.append(f"scp {parts} {q(name + '.sha256')} TARGET:/srv/bundles/")
        lines.append("# 2. on the target: verify, load and start (parts are joined on the fly)")
        lines.append(f"ezrunner run /srv/bundles/{q(Path(facts['parts'][0]).name)}")
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

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__()
        self.result = result
        self.facts = bundle_facts(result)

    def compose(self) -> ComposeResult:
        f = self.facts
        yield Header()
        yield StepIndicator(5)
        with VerticalScroll(id="done-main"):
            yield Static("Bundle ready.", id="done-title")
            lines = [
                f"path    {f['path']}",
                f"size    {human_bytes(f['size'])}" + (f" ({f['size']} bytes)" if f["size"] is not None else ""),
                f"sha256  {f['sha256'] or '-'}",
            ]
            if f["image_tag"]:
                lines.append(f"image   {f['image_tag']}")
            if f["parts"]:
                lines.append(f"parts   {len(f['parts'])}: " + ", ".join(Path(p).name for p in f["parts"]))
            else:
                lines.append("parts   none (one file)")
            yield Static("\n".join(lines), id="done-facts", markup=False)
            yield Static("Commands for the target:", classes="section-title")
            yield Static("\n".join(target_commands(f)), id="done-commands", markup=False)
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
