"""Checkbox and RadioButton whose state is visible without colour (NO_COLOR,
monochrome SSH terminals): the mark is drawn only when the value is on."""

from __future__ import annotations

from textual.widgets import Checkbox, RadioButton


class MarkCheckbox(Checkbox):
    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - Textual's attribute name
        return "X" if self.value else " "


class MarkRadioButton(RadioButton):
    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802
        return "●" if self.value else " "
