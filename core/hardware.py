"""Target hardware profiles: probe this machine (NVML + psutil), GPU presets,
manual entry, and the profile file that ``ezrunner probe -o`` writes on an
air-gapped target and ``--target FILE`` reads back on the packing machine.

NVML is reached through ONE seam: ``probe(nvml=...)`` takes any object with the
``pynvml`` functions used below; ``None`` imports ``pynvml`` (the module that
``nvidia-ml-py`` installs). Tests inject a fake there.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ezrunner.core.errors import UsageError

PROFILE_FORMAT = "ezrunner-profile/1"
GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total: int  # bytes
    compute_capability: str  # "X.Y"
    uuid: str | None = None
    memory_free: int | None = None  # bytes

    @property
    def cc(self) -> float:
        major, _, minor = self.compute_capability.partition(".")
        return int(major) + int(minor or 0) / 10


@dataclass
class HardwareProfile:
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    cpu_logical: int | None = None
    cpu_physical: int | None = None
    ram_total: int | None = None  # bytes
    ram_available: int | None = None  # bytes
    disk_path: str | None = None
    disk_free: int | None = None  # bytes
    hostname: str | None = None
    source: str = "manual"  # probe | preset | manual | file
    notes: list[str] = field(default_factory=list)
    created: str | None = None

    def summary(self) -> str:
        """One line for reasons and headers: ``2 x NVIDIA A100 80GB (80.0 GiB, cc 8.0), RAM 64.0 GiB``."""
        parts: list[str] = []
        if self.gpus:
            g = self.gpus[0]
            same = all(x.name == g.name for x in self.gpus)
            name = g.name if same else "mixed GPUs"
            parts.append(f"{len(self.gpus)} x {name} ({g.memory_total / GiB:.1f} GiB, cc {g.compute_capability})")
        else:
            parts.append("no GPU")
        if self.ram_total:
            parts.append(f"RAM {self.ram_total / GiB:.1f} GiB")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"format": PROFILE_FORMAT, **d}


# ----------------------------------------------------------------------- presets

@dataclass(frozen=True)
class GpuPreset:
    name: str  # display name
    memory_mib: int  # what NVML reports as total on that board
    compute_capability: str


GPU_PRESETS: dict[str, GpuPreset] = {
    "t4": GpuPreset("NVIDIA T4", 15360, "7.5"),
    "v100": GpuPreset("NVIDIA V100 16GB", 16384, "7.0"),
    "v100-32g": GpuPreset("NVIDIA V100 32GB", 32768, "7.0"),
    "a10": GpuPreset("NVIDIA A10", 23028, "8.6"),
    "l4": GpuPreset("NVIDIA L4", 23034, "8.9"),
    "l40s": GpuPreset("NVIDIA L40S", 46068, "8.9"),
    "a100-40g": GpuPreset("NVIDIA A100 40GB", 40960, "8.0"),
    "a100-80g": GpuPreset("NVIDIA A100 80GB", 81920, "8.0"),
    "h100": GpuPreset("NVIDIA H100 80GB", 81559, "9.0"),
    "h200": GpuPreset("NVIDIA H200 141GB", 143771, "9.0"),
    "rtx3090": GpuPreset("NVIDIA GeForce RTX 3090", 24576, "8.6"),
    "rtx4090": GpuPreset("NVIDIA GeForce RTX 4090", 24564, "8.9"),
}


def _preset_key(name: str) -> str:
    k = re.sub(r"[\s_]+", "-", name.strip().lower()).replace("nvidia-", "")
    k = k.replace("geforce-", "")
    k = re.sub(r"^rtx-?", "rtx", k)
    k = re.sub(r"(\d+)gb?$", r"\1g", k)  # a100-80gb -> a100-80g
    k = re.sub(r"^(a100|v100)(\d+g)$", r"\1-\2", k)  # a10080g -> a100-80g
    return k


def preset_names() -> list[str]:
    return [k.upper() for k in GPU_PRESETS]


def preset_profile(name: str, count: int = 1, *, ram_gib: float | None = None) -> HardwareProfile:
    """A profile of ``count`` identical preset GPUs (``name``: T4, A100-80G, "RTX 4090", ...)."""
    key = _preset_key(name)
    if key not in GPU_PRESETS:
        raise UsageError(f"--gpu: unknown GPU preset {name!r}", hint=f"choose one of: {', '.join(preset_names())}")
    if not isinstance(count, int) or count < 1 or count > 64:
        raise UsageError(f"--gpu-count: must be an integer from 1 to 64, got {count!r}")
    p = GPU_PRESETS[key]
    gpus = [GpuInfo(i, p.name, p.memory_mib * MiB, p.compute_capability) for i in range(count)]
    prof = HardwareProfile(gpus=gpus, source="preset", created=_now())
    apply_ram(prof, ram_gib)
    return prof


def manual_profile(
    *,
    gpu_count: int = 0,
    gpu_memory_gib: float | None = None,
    compute_capability: str | None = None,
    ram_gib: float | None = None,
) -> HardwareProfile:
    """A profile from typed-in values. ``gpu_count=0`` is a CPU-only machine."""
    if not isinstance(gpu_count, int) or gpu_count < 0 or gpu_count > 64:
        raise UsageError(f"--gpu-count: must be an integer from 0 to 64, got {gpu_count!r}")
    gpus: list[GpuInfo] = []
    if gpu_count:
        if gpu_memory_gib is None:
            raise UsageError("--gpu-memory: required with --gpu-count (GiB per GPU)", hint="or name a preset with --gpu, e.g. --gpu a100-80g")
        mem = _positive(gpu_memory_gib, "--gpu-memory", maximum=4096)
        cc = validate_compute_capability(compute_capability or "8.0", "--compute-capability")
        gpus = [GpuInfo(i, f"GPU ({mem:g} GiB)", int(mem * GiB), cc) for i in range(gpu_count)]
    prof = HardwareProfile(gpus=gpus, source="manual", created=_now())
    apply_ram(prof, ram_gib)
    return prof


def apply_ram(prof: HardwareProfile, ram_gib: float | None) -> None:
    """Set the target's RAM (``--ram``); without it, take this machine's and say so."""
    if ram_gib is not None:
        ram = _positive(ram_gib, "--ram", maximum=1 << 20)
        prof.ram_total = prof.ram_available = int(ram * GiB)
        return
    # Unknown target RAM: take this machine's and say so.
    host = host_info()
    prof.ram_total = host.get("ram_total")
    prof.ram_available = host.get("ram_available")
    prof.cpu_logical = host.get("cpu_logical")
    prof.cpu_physical = host.get("cpu_physical")
    prof.notes.append("RAM taken from this machine; pass --ram GiB for the target")


def _positive(value: Any, flag: str, *, maximum: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag}: not a number: {value!r}") from None
    if not (v > 0) or v > maximum or v != v:
        raise UsageError(f"{flag}: must be more than 0 and at most {maximum:g}, got {value!r}")
    return v


def validate_compute_capability(value: Any, flag: str = "compute_capability") -> str:
    text = str(value).strip()
    if not re.fullmatch(r"\d{1,2}\.\d", text):
        raise UsageError(f"{flag}: expected MAJOR.MINOR such as 8.0 or 7.5, got {value!r}")
    return text


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------ probing

def host_info(path: str | os.PathLike[str] = ".") -> dict[str, Any]:
    """CPU cores, RAM and free disk at ``path`` through psutil."""
    import psutil

    out: dict[str, Any] = {
        "cpu_logical": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
    }
    vm = psutil.virtual_memory()
    out["ram_total"] = int(vm.total)
    out["ram_available"] = int(vm.available)
    try:
        p = Path(path).resolve()
        while not p.exists() and p != p.parent:
            p = p.parent
        out["disk_path"] = str(p)
        out["disk_free"] = int(psutil.disk_usage(str(p)).free)
    except OSError:
        out["disk_path"] = str(path)
        out["disk_free"] = None
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def probe_gpus(nvml: Any = None) -> tuple[list[GpuInfo], str | None, str | None, list[str]]:
    """GPUs through NVML: ``(gpus, driver_version, cuda_driver_version, notes)``.
    No driver / no library / no GPU -> ``([], None, None, [a note])``, never an exception."""
    notes: list[str] = []
    if nvml is None:
        try:
            import pynvml as nvml  # provided by nvidia-ml-py
        except Exception as exc:  # noqa: BLE001
            return [], None, None, [f"no NVML bindings ({type(exc).__name__}); install nvidia-ml-py"]
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return [], None, None, [f"no NVIDIA driver found: {_text(exc) or type(exc).__name__}"]
    gpus: list[GpuInfo] = []
    driver = cuda = None
    try:
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception as exc:  # noqa: BLE001
            notes.append(f"driver version unknown ({_text(exc)})")
        try:
            v = int(nvml.nvmlSystemGetCudaDriverVersion())
            cuda = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception as exc:  # noqa: BLE001
            notes.append(f"CUDA driver version unknown ({_text(exc)})")
        count = int(nvml.nvmlDeviceGetCount())
        for i in range(count):
            try:
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = _text(nvml.nvmlDeviceGetName(h))
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
                try:
                    uuid = _text(nvml.nvmlDeviceGetUUID(h))
                except Exception:  # noqa: BLE001
                    uuid = None
                gpus.append(GpuInfo(i, name, int(mem.total), f"{int(major)}.{int(minor)}", uuid, int(mem.free)))
            except Exception as exc:  # noqa: BLE001
                notes.append(f"GPU {i}: cannot be read ({_text(exc) or type(exc).__name__})")
        if count == 0:
            notes.append("NVIDIA driver present but no GPU found")
    except Exception as exc:  # noqa: BLE001
        notes.append(f"NVML failed: {_text(exc) or type(exc).__name__}")
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return gpus, driver, cuda, notes


def probe(path: str | os.PathLike[str] = ".", nvml: Any = None) -> HardwareProfile:
    """Probe this machine: GPUs through NVML (``nvml`` is the one seam for a fake),
    CPU cores, RAM and free disk at ``path`` through psutil."""
    gpus, driver, cuda, notes = probe_gpus(nvml)
    host = host_info(path)
    return HardwareProfile(
        gpus=gpus,
        driver_version=driver,
        cuda_driver_version=cuda,
        hostname=socket.gethostname() or platform.node() or None,
        source="probe",
        notes=notes,
        created=_now(),
        **host,
    )


# -------------------------------------------------------------------- profile file

_PROFILE_HINT = "write the file with `ezrunner probe -o FILE` on the target"


def _bad(where: str, fld: str, why: str) -> UsageError:
    return UsageError(f"{where}: field {fld!r} {why}", hint=_PROFILE_HINT)


def _opt_int(d: dict, key: str, label: str, where: str) -> int | None:
    v = d.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
        raise _bad(where, label, f"must be a non-negative integer (bytes or count), got {v!r}")
    return v


def _opt_str(d: dict, key: str, label: str, where: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise _bad(where, label, f"must be a string, got {v!r}")
    return v


# The profile's scalar fields and their validators, checked in this order.
_SCALAR_FIELDS = (
    ("driver_version", _opt_str),
    ("cuda_driver_version", _opt_str),
    ("cpu_logical", _opt_int),
    ("cpu_physical", _opt_int),
    ("ram_total", _opt_int),
    ("ram_available", _opt_int),
    ("disk_path", _opt_str),
    ("disk_free", _opt_int),
    ("hostname", _opt_str),
    ("source", _opt_str),
    ("created", _opt_str),
)


def _gpu_from_dict(g: Any, label: str, default_index: int, where: str) -> GpuInfo:
    if not isinstance(g, dict):
        raise _bad(where, label, "must be an object")
    mem = _opt_int(g, "memory_total", f"{label}.memory_total", where)
    if not mem:
        raise _bad(where, f"{label}.memory_total", "is required (bytes, more than 0)")
    cc = g.get("compute_capability")
    if cc is None:
        raise _bad(where, f"{label}.compute_capability", "is required (\"X.Y\")")
    if not isinstance(cc, str) or not re.fullmatch(r"\d{1,2}\.\d", cc):
        raise _bad(where, f"{label}.compute_capability", f"must be \"X.Y\" such as \"8.0\", got {cc!r}")
    idx = g.get("index", default_index)
    if isinstance(idx, bool) or not isinstance(idx, int):
        raise _bad(where, f"{label}.index", f"must be an integer, got {idx!r}")
    name = _opt_str(g, "name", f"{label}.name", where) or "GPU"
    uuid = _opt_str(g, "uuid", f"{label}.uuid", where)
    return GpuInfo(idx, name, mem, cc, uuid, _opt_int(g, "memory_free", f"{label}.memory_free", where))


def _gpus_from_dict(data: dict, where: str) -> list[GpuInfo]:
    raw = data.get("gpus", [])
    if not isinstance(raw, list):
        raise _bad(where, "gpus", "must be a list")
    return [_gpu_from_dict(g, f"gpus[{i}]", i, where) for i, g in enumerate(raw)]


def _notes_from_dict(data: dict, where: str) -> list[str]:
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise _bad(where, "notes", "must be a list of strings")
    return list(notes)


def profile_from_dict(data: Any, *, where: str = "profile") -> HardwareProfile:
    """Validate and build a profile; errors name ``where`` and the field."""
    if not isinstance(data, dict):
        raise _bad(where, "(top level)", "must be a JSON object")
    fmt = data.get("format")
    if fmt is not None and fmt != PROFILE_FORMAT:
        raise _bad(where, "format", f"is {fmt!r}, expected {PROFILE_FORMAT!r}")
    gpus = _gpus_from_dict(data, where)
    notes = _notes_from_dict(data, where)
    scalars = {key: check(data, key, key, where) for key, check in _SCALAR_FIELDS}
    scalars["source"] = scalars["source"] or "file"
    return HardwareProfile(gpus=gpus, notes=notes, **scalars)


def load_profile(path: str | os.PathLike[str]) -> HardwareProfile:
    """Read a profile file written by :func:`save_profile` (``ezrunner probe -o``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--target: no such file: {p}") from None
    except OSError as exc:
        raise UsageError(f"--target: cannot read {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{p}: not valid JSON (line {getattr(exc, 'lineno', '?')}: {getattr(exc, 'msg', exc)})",
                         hint=_PROFILE_HINT) from None
    return profile_from_dict(data, where=str(p))


def save_profile(profile: HardwareProfile, path: str | os.PathLike[str]) -> Path:
    from ezrunner.core.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(profile.to_dict(), indent=2) + "\n")
    return Path(path)
