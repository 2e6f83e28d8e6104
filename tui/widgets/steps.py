"""The wizard's step indicator: ``1 Search > 2 Hardware > [3 Review] > ...``."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

STEPS = ("Search", "Hardware", "Review", "Build", "Done")


class StepIndicator(Static):
    """Shows the five steps; the current one is bracketed (readable with NO_COLOR)
    and highlighted, finished ones carry a check mark."""

    DEFAULT_CSS = """
    StepIndicator {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    """

    def __init__(self, current: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.current = current

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        for index, name in enumerate(STEPS, start=1):
            if index > 1:
                text.append(" > ", style="dim")
            if index == self.current:
                text.append(f"[{index} {name}]", style="bold reverse")
            elif index < self.current:
                text.append(f"{index} {name} ✓", style="")
            else:
                text.append(f"{index} {name}", style="dim")
        return text
