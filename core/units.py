"""Human-readable units, shared by the CLI, the TUI and core messages."""

from __future__ import annotations

from typing import Any


def human_bytes(value: Any) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``None`` or ``""`` -> ``"-"``; non-numbers pass through."""
    if value is None or value == "":
        return "-"
    try:
        n = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
