"""Target-hardware options shared by ``ezrunner plan`` and ``ezrunner pack``.

``add_target_arguments(parser)`` adds ``--target FILE``, ``--gpu PRESET``,
``--gpu-count N``, ``--gpu-memory GiB``, ``--compute-capability X.Y``,
``--ram GiB`` and ``--cpu-only``; ``profile_from_args(args)`` turns them into a
:class:`ezrunner.core.hardware.HardwareProfile`. With none of them given, this
machine is probed.
"""

from __future__ import annotations

import argparse

PRESET_HELP = "T4, V100, V100-32G, A10, L4, L40S, A100-40G, A100-80G, H100, H200, RTX3090, RTX4090"


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "target hardware",
        "Where the bundle will run. Give a profile file from `ezrunner probe -o`, a GPU preset, "
        "or manual values; with none of these, this machine is probed.",
    )
    g.add_argument("--target", metavar="FILE", help="a profile file written by `ezrunner probe -o FILE` on the target")
    g.add_argument("--gpu", metavar="PRESET", help=f"a GPU preset: {PRESET_HELP}")
    g.add_argument("--gpu-count", metavar="N", type=_int_arg("--gpu-count"), help="how many GPUs (default 1 with --gpu or --gpu-memory)")
    g.add_argument("--gpu-memory", metavar="GiB", type=_float_arg("--gpu-memory"), help="memory per GPU in GiB (manual entry)")
    g.add_argument("--compute-capability", metavar="X.Y", help="GPU compute capability, e.g. 8.0 (manual entry; default 8.0)")
    g.add_argument("--ram", metavar="GiB", type=_float_arg("--ram"), help="the target's RAM in GiB")
    g.add_argument("--cpu-only", action="store_true", help="the target has no (usable) GPU")


def _int_arg(flag: str):
    def conv(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: not an integer: {text!r}") from None

    return conv


def _float_arg(flag: str):
    def conv(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: not a number: {text!r}") from None

    return conv


def profile_from_args(args: argparse.Namespace, *, probe_path: str = "."):
    """Build the target profile from the parsed options (see module docstring)."""
    from ezrunner.core import hardware
    from ezrunner.core.errors import UsageError

    target = getattr(args, "target", None)
    gpu = getattr(args, "gpu", None)
    count = getattr(args, "gpu_count", None)
    mem = getattr(args, "gpu_memory", None)
    cc = getattr(args, "compute_capability", None)
    ram = getattr(args, "ram", None)
    cpu_only = bool(getattr(args, "cpu_only", False))

    if target:
        others = [f for f, v in (("--gpu", gpu), ("--gpu-count", count), ("--gpu-memory", mem),
                                 ("--compute-capability", cc), ("--ram", ram)) if v is not None]
        if cpu_only:
            others.append("--cpu-only")
        if others:
            raise UsageError(f"--target: cannot be combined with {', '.join(others)}",
                             hint="the profile file already describes the target; edit it or drop --target")
        return hardware.load_profile(target)
    if cpu_only:
        bad = [f for f, v in (("--gpu", gpu), ("--gpu-count", count), ("--gpu-memory", mem),
                              ("--compute-capability", cc)) if v is not None]
        if bad:
            raise UsageError(f"--cpu-only: cannot be combined with {', '.join(bad)}")
        return _target_ram(hardware.manual_profile(gpu_count=0, ram_gib=ram), ram)
    if gpu:
        if mem is not None or cc is not None:
            raise UsageError("--gpu: a preset already sets memory and compute capability; drop --gpu-memory/--compute-capability")
        return _target_ram(hardware.preset_profile(gpu, 1 if count is None else count, ram_gib=ram), ram)
    if mem is not None or count is not None or cc is not None:
        if cc is not None:
            hardware.validate_compute_capability(cc, "--compute-capability")
        if count == 0:
            return _target_ram(hardware.manual_profile(gpu_count=0, ram_gib=ram), ram)
        return _target_ram(hardware.manual_profile(gpu_count=1 if count is None else count, gpu_memory_gib=mem,
                                                   compute_capability=cc, ram_gib=ram), ram)
    prof = hardware.probe(probe_path)
    if ram is not None:
        hardware.apply_ram(prof, ram)
    return prof


def _target_ram(prof, ram):
    """A preset or typed target is another machine: without --ram its RAM is unknown (the plan asks
    for it), never this machine's."""
    if ram is None:
        prof.ram_total = prof.ram_available = None
        prof.notes = [n for n in prof.notes if "RAM taken from this machine" not in n]
        prof.notes.append("the target's RAM is unknown: pass --ram GiB to plan a CPU fallback")
    return prof
