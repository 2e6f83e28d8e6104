"""TUI start-up: time from process start to the first frame of ``ezrunner``'s app,
side by side with the floor - a minimal Textual app (one Static) started the same
way in the same run - and with bare ``python -c pass``.

Each run is a fresh subprocess (cold imports, warm page cache), headless at
80x24. The child records ``time.time()`` when the first frame has been
composed (``App.on_ready`` via ``call_after_refresh``) and exits; the parent
subtracts the moment just before it spawned the child.

    .venv/bin/python tests/benchmarks/tui_startup_bench.py [RUNS]

Target (issue 7): first frame < 0.5 s. Not a timed test: only measured here.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

EZRUNNER = """
import time
from ezrunner.tui.app import EzRunnerApp

class Timed(EzRunnerApp):
    def on_ready(self):
        self.call_after_refresh(self._first_frame)

    def _first_frame(self):
        print(f"FRAME {time.time():.6f}", flush=True)
        self.exit()

Timed().run(headless=True, size=(80, 24))
"""

MINIMAL = """
import time
from textual.app import App
from textual.widgets import Static

class Minimal(App):
    def compose(self):
        yield Static("hello")

    def on_ready(self):
        self.call_after_refresh(self._first_frame)

    def _first_frame(self):
        print(f"FRAME {time.time():.6f}", flush=True)
        self.exit()

Minimal().run(headless=True, size=(80, 24))
"""

PASS = "import time; print(f'FRAME {time.time():.6f}')"


def one(code: str) -> float:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    for line in out.stdout.splitlines():
        if line.startswith("FRAME "):
            return float(line.split()[1]) - t0
    raise SystemExit(f"no frame reported: {out.stdout!r} {out.stderr[-2000:]!r}")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    cases = {"python -c pass": PASS, "minimal Textual app (floor)": MINIMAL, "ezrunner TUI": EZRUNNER}
    for code in cases.values():  # warm the page cache and the .pyc files
        one(code)
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, so background load hits all alike
        for name, code in cases.items():
            results[name].append(one(code))
    print(f"first frame, headless 80x24, {runs} runs each (median / best)")
    for name, times in results.items():
        print(f"  {name:<30} {statistics.median(times) * 1000:7.0f} ms  {min(times) * 1000:7.0f} ms")
    ez = statistics.median(results["ezrunner TUI"])
    floor = statistics.median(results["minimal Textual app (floor)"])
    print(f"ratio ezrunner / minimal Textual app: {ez / floor:.2f}x")
    print(f"target first frame < 500 ms: {'met' if ez < 0.5 else 'NOT met'} ({ez * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
