"""Abuse benchmark: the embedded server under slowloris, idle floods, clients that never read
their stream and big bodies, with /health latency and normal-stream TTFT measured throughout.

One run, one server (``python -m ezrunner.images.server``, the demo preset "small" as in
serve_bench.py), loopback only, bounded in time and count. Phases, each ``--phase-seconds``
long: quiet, then every attack alone, then all of them at once; then ``--rounds`` more rounds
of all at once, to see whether the server's memory converges. The attacks run in a
separate process (so that their event loop does not delay the measurements); this
process meanwhile:

- probes ``GET /health`` every 100 ms, each time on a new connection (as a container
  health check does), and
- runs one normal client: streamed chats of 16 tokens, one after another, timing the first
  chunk with content (TTFT).

It prints one table: per phase the /health p50 / p99 / max and failures, the normal
streams' median TTFT, its ratio to the quiet phase's, their failures, and the server's RSS
at the end of the phase (after a 3 s pause). Goals (issue 14): /health < 100 ms
throughout, TTFT <= 2x quiet. Not collected by pytest. Usage::

    .venv/bin/python tests/benchmarks/abuse_bench.py [--phase-seconds 20] [--rounds 3] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import free_port, wait_ready  # noqa: E402

MODEL = "bench"
ATTACKS = ("slowloris", "idle flood", "non-readers", "big bodies")
REFERENCE = "readers (ref.)"  # the non-readers' requests from clients that do read: the same compute
BIG_PROMPT = ("The operator loads the bundle on the air-gapped server. " * 70_000)[:3_900_000]


# ------------------------------------------------------------------------------------------ attackers


async def _open(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def slowloris(port: int, n: int, until: float, stats: dict) -> None:
    """n connections, each trickling one header byte a second and never finishing; reopened when closed."""

    async def one() -> None:
        loop = asyncio.get_running_loop()
        while time.monotonic() < until:
            try:
                sock = await _open(port)
                await loop.sock_sendall(sock, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
                while time.monotonic() < until and not _closed(sock):
                    await loop.sock_sendall(sock, b"x")
                    await asyncio.sleep(1)
                stats["slowloris closed by server"] = stats.get("slowloris closed by server", 0) + 1
                sock.close()
            except OSError:
                stats["slowloris errors"] = stats.get("slowloris errors", 0) + 1
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one() for _ in range(n)))


async def idle_flood(port: int, n: int, until: float, stats: dict) -> None:
    """n connections that send nothing, opened 100 at a time, reopened when the server closes them."""
    held: list[socket.socket] = []
    while time.monotonic() < until:
        held = [s for s in held if not _closed(s) or s.close()]
        missing = n - len(held)
        stats["idle reopened"] = stats.get("idle reopened", 0) + missing
        for start in range(0, missing, 100):
            results = await asyncio.gather(*(_open(port) for _ in range(min(100, missing - start))),
                                           return_exceptions=True)
            held += [s for s in results if isinstance(s, socket.socket)]
        await asyncio.sleep(0.5)
    for s in held:
        s.close()


async def non_readers(port: int, n: int, until: float, stats: dict) -> None:
    """n streamed chats of 1500 tokens whose client never reads (4 KiB receive buffer); a new
    one as soon as the server gives one up."""
    body = json.dumps(LONG_CHAT).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def one() -> None:
        loop = asyncio.get_running_loop()
        while time.monotonic() < until:
            try:
                sock = await _open(port, rcvbuf=4096)
                await loop.sock_sendall(sock, request)
                while time.monotonic() < until and not _closed(sock):
                    await asyncio.sleep(0.5)
                stats["non-readers given up by server"] = stats.get("non-readers given up by server", 0) + 1
                sock.close()
            except OSError:
                await asyncio.sleep(0.5)

    await asyncio.gather(*(one() for _ in range(n)))


LONG_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me everything."}], "max_tokens": 1500,
             "ignore_eos": True, "stream": True}


async def readers(port: int, n: int, until: float, stats: dict) -> None:
    """The non-readers' requests from n clients that read (reference: what that load costs anyway)."""

    async def one() -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            while time.monotonic() < until:
                async with c.stream("POST", "/v1/chat/completions", json=LONG_CHAT) as r:
                    async for _ in r.aiter_bytes():
                        if time.monotonic() >= until:
                            break
                stats["readers done"] = stats.get("readers done", 0) + 1

    await asyncio.gather(*(one() for _ in range(n)))


BIG_BODY_PAUSE = 0.2  # seconds between two posts of one client: 2 clients post ~39 MB/s, 310 Mbit/s


async def big_bodies(port: int, n: int, until: float, stats: dict) -> None:
    """n clients posting 3.9 MB prompts (completions, then chat), one every BIG_BODY_PAUSE s each
    (unpaced, the attacking process alone would take both cores of the CI machine copying bytes)."""
    bodies = [json.dumps({"model": MODEL, "prompt": BIG_PROMPT}).encode(),
              json.dumps({"model": MODEL, "messages": [{"role": "user", "content": BIG_PROMPT}]}).encode()]
    paths = ["/v1/completions", "/v1/chat/completions"]

    async def one(i: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            while time.monotonic() < until:
                k = i % 2
                i += 1
                try:
                    r = await c.post(paths[k], content=bodies[k], headers={"content-type": "application/json"})
                    key = f"big bodies {r.status_code}"
                except httpx.HTTPError as exc:
                    key = f"big bodies {type(exc).__name__}"
                stats[key] = stats.get(key, 0) + 1
                await asyncio.sleep(BIG_BODY_PAUSE)

    await asyncio.gather(*(one(i) for i in range(n)))


def _attack_main(port: int, kinds: list[str], seconds: float, counts: dict, out) -> None:
    stats: dict = {}
    until = time.monotonic() + seconds
    makers = {"slowloris": slowloris, "idle flood": idle_flood, "non-readers": non_readers, "big bodies": big_bodies,
              REFERENCE: readers}

    async def run() -> None:
        await asyncio.gather(*(makers[k](port, counts[k], until, stats) for k in kinds))

    asyncio.run(run())
    out.put(stats)


# ------------------------------------------------------------------------------------------ measuring


async def probe_health(base: str, until: float, out: list) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            try:
                ok = (await c.get("/health")).status_code == 200
            except httpx.HTTPError:
                ok = False
            out.append((time.perf_counter() - t0, ok))
            await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - t0)))


async def normal_streams(base: str, until: float, out: list) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Describe continuous batching."}],
            "max_tokens": 16, "stream": True}
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            ttft = None
            try:
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        out.append((None, r.status_code))
                        await r.aread()
                        await asyncio.sleep(0.2)
                        continue
                    async for line in r.aiter_lines():
                        if ttft is None and line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                            ttft = time.perf_counter() - t0
                out.append((ttft, 200))
            except httpx.HTTPError as exc:
                out.append((None, type(exc).__name__))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_phase(name: str, kinds: list[str], base: str, port: int, seconds: float, counts: dict, pid: int) -> dict:
    stats: dict = {}
    attacker = None
    if kinds:
        queue: multiprocessing.Queue = multiprocessing.Queue()
        attacker = multiprocessing.Process(target=_attack_main, args=(port, kinds, seconds, counts, queue))
        attacker.start()
        time.sleep(1.0)  # let the attack build up before measuring
    health: list = []
    streams: list = []
    until = time.monotonic() + (seconds - 1.0 if kinds else seconds)

    async def measure() -> None:
        await asyncio.gather(probe_health(base, until, health), normal_streams(base, until, streams))

    asyncio.run(measure())
    if attacker is not None:
        stats = queue.get(timeout=120)
        attacker.join(timeout=60)
    time.sleep(3)
    lat = sorted(t for t, _ in health)
    ttfts = [t for t, s in streams if s == 200 and t is not None]
    return {
        "phase": name, "health_p50": statistics.median(lat) * 1000, "health_p99": lat[int(len(lat) * 0.99)] * 1000,
        "health_max": lat[-1] * 1000, "health_failed": sum(1 for _, ok in health if not ok), "health_n": len(lat),
        "ttft": statistics.median(ttfts) * 1000 if ttfts else float("nan"),
        "streams_ok": len(ttfts), "streams_failed": sum(1 for _, s in streams if s != 200),
        "rss": rss_mib(pid), "stats": stats,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="use this model folder instead of writing the small demo model")
    ap.add_argument("--phase-seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3, help="extra all-at-once rounds for the memory trend")
    ap.add_argument("--slowloris", type=int, default=300)
    ap.add_argument("--idle", type=int, default=2000, help="idle connections held (past --max-connections)")
    ap.add_argument("--non-readers", type=int, default=8)
    ap.add_argument("--big-bodies", type=int, default=2)
    ap.add_argument("--only", choices=(*ATTACKS, REFERENCE), action="append",
                    help="run the quiet phase and this attack only (repeatable); no all-at-once rounds")
    ap.add_argument("--server-args", default="--stream-write-timeout 5",
                    help="extra server options (default: %(default)s)")
    args = ap.parse_args()
    counts = {"slowloris": args.slowloris, "idle flood": args.idle, "non-readers": args.non_readers,
              "big bodies": args.big_bodies, REFERENCE: args.non_readers}
    with tempfile.TemporaryDirectory(prefix="ezrunner-abuse-") as tmp:
        work = Path(tmp)
        if args.model_dir:
            model_dir = Path(args.model_dir)
        else:
            from ezrunner.core.demo_model import write_demo_model

            model_dir = write_demo_model(work / "small", preset="small")
        port = free_port()
        log = open(work / "server.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "ezrunner.images.server", str(model_dir), "--port", str(port),
               "--served-model-name", MODEL, *args.server_args.split()]
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "EZRUNNER_API_KEY": ""})
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{base}/ready", server)
            rows = [run_phase("quiet", [], base, port, args.phase_seconds, counts, server.pid)]
            for kind in args.only or (ATTACKS[0], ATTACKS[1], REFERENCE, *ATTACKS[2:]):
                rows.append(run_phase(kind, [kind], base, port, args.phase_seconds, counts, server.pid))
            for i in range(0 if args.only else args.rounds + 1):
                rows.append(run_phase(f"all at once #{i + 1}", list(ATTACKS), base, port, args.phase_seconds,
                                      counts, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
        log_size = (work / "server.log").stat().st_size
    report(rows, args, log_size)
    return 0


def report(rows: list[dict], args, log_size: int) -> None:
    quiet = rows[0]["ttft"]
    print(f"server options: {args.server_args}; attacks: slowloris {args.slowloris}, idle {args.idle}, "
          f"non-readers {args.non_readers}, big-body clients {args.big_bodies}; {args.phase_seconds:g} s a phase")
    print(f"{'phase':<16} {'health p50':>10} {'p99':>7} {'max':>7} {'failed':>7} {'TTFT':>7} {'x quiet':>7} "
          f"{'streams ok/failed':>17} {'RSS MiB':>8}")
    for r in rows:
        print(f"{r['phase']:<16} {r['health_p50']:>7.1f} ms {r['health_p99']:>4.0f} ms {r['health_max']:>4.0f} ms "
              f"{r['health_failed']:>3}/{r['health_n']:<3} {r['ttft']:>4.0f} ms {r['ttft'] / quiet:>6.2f}x "
              f"{r['streams_ok']:>9}/{r['streams_failed']:<7} {r['rss']:>8.0f}")
    print(f"server log: {log_size / 1024:.0f} KiB in all")
    for r in rows:
        if r["stats"]:
            print(f"  {r['phase']}: " + ", ".join(f"{k} {v}" for k, v in sorted(r["stats"].items())))


if __name__ == "__main__":
    sys.exit(main())
