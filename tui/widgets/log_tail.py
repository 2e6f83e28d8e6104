"""A k9s-style log tail on top of ``textual.widgets.Log``.

Lines arrive in batches (``append_lines``), are kept in a bounded buffer, and are
written with ONE ``Log.write_lines`` call per batch. ``/`` filter, follow on/off,
wrap and clear act on the buffer, so a filter change re-renders from it.
"""

from __future__ import annotations

import textwrap
from collections import deque
from collections.abc import Iterable

from textual.widgets import Log


class LogTail(Log):
    DEFAULT_CSS = """
    LogTail {
        height: 1fr;
        border: round $panel-lighten-2;
    }
    """

    def __init__(self, *, max_lines: int = 5000, placeholder: str = "Waiting for logs...", **kwargs) -> None:
        super().__init__(max_lines=max_lines, auto_scroll=True, **kwargs)
        self._buffer: deque[str] = deque(maxlen=max_lines)
        self._placeholder = placeholder
        self.filter_text = ""
        self.wrap = False
        self.follow = True
        self.batches_written = 0

    def on_mount(self) -> None:
        self._rerender()

    # ---- data -------------------------------------------------------------------------------
    @property
    def buffer(self) -> list[str]:
        return list(self._buffer)

    def _visible(self, lines: Iterable[str]) -> list[str]:
        needle = self.filter_text.lower()
        shown = [line for line in lines if needle in line.lower()] if needle else list(lines)
        if self.wrap and self.size.width > 4:
            width = max(self.size.width - 3, 10)
            wrapped: list[str] = []
            for line in shown:
                wrapped.extend(textwrap.wrap(line, width, drop_whitespace=False) or [""])
            shown = wrapped
        return shown

    def append_lines(self, lines: Iterable[str]) -> None:
        """Add one batch of lines (call on the UI thread)."""
        batch = [line.rstrip("\r\n") for line in lines]
        if not batch:
            return
        was_empty = not self._buffer
        self._buffer.extend(batch)
        if was_empty:
            self._rerender()
            return
        visible = self._visible(batch)
        if visible:
            self.auto_scroll = self.follow
            self.write_lines(visible)
            self.batches_written += 1

    def _rerender(self) -> None:
        super().clear()
        self.auto_scroll = self.follow
        if not self._buffer:
            self.write_line(self._placeholder)
            return
        self.write_lines(self._visible(self._buffer))
        self.batches_written += 1
        if self.follow:
            self.scroll_end(animate=False)

    # ---- k9s keys ---------------------------------------------------------------------------
    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._rerender()

    def toggle_wrap(self) -> bool:
        self.wrap = not self.wrap
        self._rerender()
        return self.wrap

    def toggle_follow(self) -> bool:
        self.follow = not self.follow
        self.auto_scroll = self.follow
        if self.follow:
            self.scroll_end(animate=False)
        return self.follow

    def clear_buffer(self) -> None:
        self._buffer.clear()
        self._rerender()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        if not self._buffer:
            self._rerender()
