"""``ezrunner probe``: describe this machine's GPUs, CPU, RAM and disk; write a profile file."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="describe this machine's GPUs, CPU, RAM and disk (write a profile file with -o)",
        description=(
            "Probe this machine: NVIDIA GPUs through NVML (name, memory, compute capability, driver), "
            "CPU cores, RAM and free disk. Run it on the air-gapped target with -o FILE, carry the file "
            "back, and pack for it with --target FILE."
        ),
    )
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("-o", "--output", metavar="FILE", help="write the profile file here")
    p.add_argument("--path", default=".", help="report free disk space at this path (default: .)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from ezrunner.core import hardware

    prof = hardware.probe(args.path)
    if args.output:
        try:
            hardware.save_profile(prof, args.output)
        except OSError as exc:
            from ezrunner.core.errors import UsageError

            raise UsageError(f"-o: cannot write {args.output}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(prof.to_dict(), indent=2))
    else:
        print(format_profile(prof))
        if args.output:
            print(f"\nprofile written to {args.output}")
    return 0


def format_profile(prof) -> str:
    from ezrunner.core.units import human_bytes

    lines = []
    if prof.gpus:
        lines.append(f"driver {prof.driver_version or '?'}, CUDA {prof.cuda_driver_version or '?'}")
        for g in prof.gpus:
            free = f", {human_bytes(g.memory_free)} free" if g.memory_free is not None else ""
            lines.append(f"GPU {g.index}: {g.name}, {human_bytes(g.memory_total)}{free}, compute capability {g.compute_capability}")
    else:
        lines.append("GPUs: none")
    lines.append(f"CPU: {prof.cpu_logical or '?'} logical / {prof.cpu_physical or '?'} physical cores")
    lines.append(f"RAM: {human_bytes(prof.ram_total)} total, {human_bytes(prof.ram_available)} available")
    if prof.disk_path:
        lines.append(f"disk: {human_bytes(prof.disk_free)} free at {prof.disk_path}")
    for n in prof.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)
