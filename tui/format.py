"""Display formatting only (units, placeholders); no figure is computed here."""

from __future__ import annotations

from typing import Any

from ezrunner.core.units import human_bytes

__all__ = ["dash", "human_bytes", "human_count", "human_duration", "yes_no"]


def dash(value: Any, placeholder: str = "-") -> Any:
    """``value``, or the placeholder when it is missing (None or empty text)."""
    return placeholder if value is None or value == "" else value


def human_count(value: Any) -> str:
    if value is None or value == "":
        return "-"
    try:
        n = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def human_duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = int(float(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def yes_no(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return value
    return "yes" if value else "no"
