"""Hardware profiles: NVML through the one injectable seam (a fake on this GPU-less
machine, and the real nvidia-ml-py without a driver), psutil host facts, presets,
manual entry, the profile file and its validation."""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import pytest
from conftest import EZRUNNER
from ezrunner.core import hardware
from ezrunner.core.errors import UsageError
from ezrunner.core.hardware import GiB, MiB


class FakeNVMLError(Exception):
    pass


class FakeNVML:
    """Stands in for the ``pynvml`` module: two A100-80GB GPUs, driver 550.54.15, CUDA 12.4."""

    NVMLError = FakeNVMLError

    def __init__(self, gpus=None, init_error=None, bytes_names=False):
        self.gpus = gpus if gpus is not None else [
            ("NVIDIA A100-SXM4-80GB", 81920 * MiB, 80000 * MiB, (8, 0), "GPU-aaaa"),
            ("NVIDIA A100-SXM4-80GB", 81920 * MiB, 81000 * MiB, (8, 0), "GPU-bbbb"),
        ]
        self.init_error = init_error
        self.bytes_names = bytes_names
        self.calls: list[str] = []

    def nvmlInit(self):
        self.calls.append("init")
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        name = self.gpus[h][0]
        return name.encode() if self.bytes_names else name

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=self.gpus[h][1], free=self.gpus[h][2], used=self.gpus[h][1] - self.gpus[h][2])

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return self.gpus[h][3]

    def nvmlDeviceGetUUID(self, h):
        return self.gpus[h][4]


def test_probe_with_fake_nvml_reports_every_gpu_field(tmp_path):
    fake = FakeNVML(bytes_names=True)
    prof = hardware.probe(tmp_path, nvml=fake)
    assert prof.driver_version == "550.54.15" and prof.cuda_driver_version == "12.4"
    assert [g.index for g in prof.gpus] == [0, 1]
    g = prof.gpus[1]
    assert (g.name, g.uuid, g.memory_total, g.memory_free, g.compute_capability) == (
        "NVIDIA A100-SXM4-80GB", "GPU-bbbb", 81920 * MiB, 81000 * MiB, "8.0")
    assert fake.calls[0] == "init" and fake.calls[-1] == "shutdown"
    # host facts through psutil
    import psutil

    assert prof.cpu_logical == psutil.cpu_count() and prof.ram_total == psutil.virtual_memory().total
    assert prof.disk_free and prof.disk_free > 0 and prof.disk_path == str(tmp_path.resolve())
    assert prof.source == "probe"


def test_probe_without_driver_is_a_valid_profile_with_a_note():
    prof = hardware.probe(nvml=FakeNVML(init_error=FakeNVMLError("NVML Shared Library Not Found")))
    assert prof.gpus == [] and any("NVML Shared Library Not Found" in n for n in prof.notes)
    assert prof.ram_total and prof.ram_total > 0


def test_probe_with_driver_but_no_gpu():
    prof = hardware.probe(nvml=FakeNVML(gpus=[]))
    assert prof.gpus == [] and any("no GPU" in n for n in prof.notes)


def test_real_nvml_on_this_machine_never_raises():
    # The real nvidia-ml-py: on a machine without an NVIDIA driver it must give a note, not a traceback.
    prof = hardware.probe()
    if prof.gpus:
        assert all(g.memory_total > 0 for g in prof.gpus)
    else:
        assert prof.notes


def test_profile_round_trip(tmp_path):
    prof = hardware.probe(tmp_path, nvml=FakeNVML())
    path = hardware.save_profile(prof, tmp_path / "target.json")
    back = hardware.load_profile(path)
    assert back.to_dict() == prof.to_dict()
    assert json.loads(path.read_text())["format"] == "ezrunner-profile/1"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["gpus"][0].pop("memory_total"), "gpus[0].memory_total"),
        (lambda d: d["gpus"][1].__setitem__("compute_capability", "eight"), "gpus[1].compute_capability"),
        (lambda d: d.__setitem__("ram_total", "64G"), "ram_total"),
        (lambda d: d.__setitem__("gpus", {"0": {}}), "gpus"),
        (lambda d: d.__setitem__("format", "something-else/9"), "format"),
    ],
)
def test_malformed_profile_names_file_and_field(tmp_path, mutate, field):
    d = hardware.probe(tmp_path, nvml=FakeNVML()).to_dict()
    mutate(d)
    f = tmp_path / "bad-profile.json"
    f.write_text(json.dumps(d))
    with pytest.raises(UsageError) as e:
        hardware.load_profile(f)
    assert str(f) in e.value.message and repr(field) in e.value.message


def test_profile_that_is_not_json(tmp_path):
    f = tmp_path / "p.json"
    f.write_text("{not json")
    with pytest.raises(UsageError) as e:
        hardware.load_profile(f)
    assert str(f) in e.value.message and "JSON" in e.value.message


@pytest.mark.parametrize(
    ("name", "mem_mib", "cc"),
    [
        ("T4", 15360, "7.5"), ("v100", 16384, "7.0"), ("A10", 23028, "8.6"), ("L4", 23034, "8.9"),
        ("L40S", 46068, "8.9"), ("A100-40G", 40960, "8.0"), ("a100-80g", 81920, "8.0"), ("A100 80GB", 81920, "8.0"),
        ("H100", 81559, "9.0"), ("H200", 143771, "9.0"), ("RTX 3090", 24576, "8.6"), ("rtx4090", 24564, "8.9"),
    ],
)
def test_presets(name, mem_mib, cc):
    prof = hardware.preset_profile(name, 2, ram_gib=64)
    assert len(prof.gpus) == 2 and prof.gpus[0].memory_total == mem_mib * MiB and prof.gpus[0].compute_capability == cc
    assert prof.ram_total == 64 * GiB


def test_bad_preset_and_manual_values_name_the_flag():
    with pytest.raises(UsageError, match="--gpu"):
        hardware.preset_profile("K80")
    with pytest.raises(UsageError, match="--gpu-count"):
        hardware.preset_profile("T4", 0)
    with pytest.raises(UsageError, match="--gpu-memory"):
        hardware.manual_profile(gpu_count=1, gpu_memory_gib=-3)
    with pytest.raises(UsageError, match="--compute-capability"):
        hardware.manual_profile(gpu_count=1, gpu_memory_gib=24, compute_capability="ampere")
    with pytest.raises(UsageError, match="--ram"):
        hardware.manual_profile(ram_gib="lots")


def test_manual_profile():
    prof = hardware.manual_profile(gpu_count=4, gpu_memory_gib=48, compute_capability="8.9", ram_gib=256)
    assert len(prof.gpus) == 4 and prof.gpus[3].memory_total == 48 * GiB and prof.gpus[0].cc == 8.9
    cpu = hardware.manual_profile(ram_gib=64)
    assert cpu.gpus == [] and cpu.ram_total == 64 * GiB


def _run(*args, **kw):
    env = dict(os.environ, **kw.pop("env", {}))
    return subprocess.run([EZRUNNER, *args], capture_output=True, text=True, timeout=60, env=env)


def test_cli_probe_json_and_output_file(tmp_path):
    out = tmp_path / "target.json"
    p = _run("probe", "--json", "-o", str(out), "--path", str(tmp_path))
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert isinstance(data["gpus"], list) and data["ram_total"] > 0 and data["cpu_logical"] >= 1
    assert hardware.load_profile(out).ram_total == data["ram_total"]


def test_cli_plan_with_bad_target_file_names_file_and_field(tmp_path, tiny_model_dir):
    f = tmp_path / "target.json"
    f.write_text(json.dumps({"format": "ezrunner-profile/1", "gpus": [{"memory_total": 1, "compute_capability": 8}]}))
    p = _run("plan", str(tiny_model_dir), "--target", str(f))
    assert p.returncode == 2
    first = p.stderr.splitlines()[0]
    assert str(f) in first and "gpus[0].compute_capability" in first and "Traceback" not in p.stderr


def test_cli_bad_flags_name_the_flag(tiny_model_dir):
    p = _run("plan", str(tiny_model_dir), "--gpu", "k80")
    assert p.returncode == 2 and "--gpu" in p.stderr and "Traceback" not in p.stderr
    p = _run("plan", str(tiny_model_dir), "--gpu-count", "two")
    assert p.returncode == 2 and "--gpu-count" in p.stderr
    p = _run("plan", str(tiny_model_dir), "--gpu", "t4", "--cpu-only")
    assert p.returncode == 2 and "--cpu-only" in p.stderr
    p = _run("plan", str(tiny_model_dir), "--target", "x.json", "--gpu", "t4")
    assert p.returncode == 2 and "--target" in p.stderr


# Messages recorded from the code at 67b4606, before profile_from_dict became field validators.
_G = {"memory_total": 1024, "compute_capability": "8.0"}
PROFILE_ERRORS = [
    ([], "field '(top level)' must be a JSON object"),
    ({"format": "x/2"}, "field 'format' is 'x/2', expected 'ezrunner-profile/1'"),
    ({"gpus": {}}, "field 'gpus' must be a list"),
    ({"gpus": [3]}, "field 'gpus[0]' must be an object"),
    ({"gpus": [{"compute_capability": "8.0"}]}, "field 'gpus[0].memory_total' is required (bytes, more than 0)"),
    ({"gpus": [{**_G, "memory_total": 0}]}, "field 'gpus[0].memory_total' is required (bytes, more than 0)"),
    ({"gpus": [{**_G, "memory_total": -1}]},
     "field 'gpus[0].memory_total' must be a non-negative integer (bytes or count), got -1"),
    ({"gpus": [{**_G, "memory_total": True}]},
     "field 'gpus[0].memory_total' must be a non-negative integer (bytes or count), got True"),
    ({"gpus": [{"memory_total": 1024}]}, "field 'gpus[0].compute_capability' is required (\"X.Y\")"),
    ({"gpus": [{**_G, "compute_capability": 8.0}]},
     "field 'gpus[0].compute_capability' must be \"X.Y\" such as \"8.0\", got 8.0"),
    ({"gpus": [_G, {**_G, "compute_capability": "8"}]},
     "field 'gpus[1].compute_capability' must be \"X.Y\" such as \"8.0\", got '8'"),
    ({"gpus": [{**_G, "index": "0"}]}, "field 'gpus[0].index' must be an integer, got '0'"),
    ({"gpus": [{**_G, "index": False}]}, "field 'gpus[0].index' must be an integer, got False"),
    ({"gpus": [{**_G, "name": 3}]}, "field 'gpus[0].name' must be a string, got 3"),
    ({"gpus": [{**_G, "uuid": 3}]}, "field 'gpus[0].uuid' must be a string, got 3"),
    ({"gpus": [{**_G, "memory_free": "1"}]},
     "field 'gpus[0].memory_free' must be a non-negative integer (bytes or count), got '1'"),
    ({"notes": "x"}, "field 'notes' must be a list of strings"),
    ({"notes": [1], "ram_total": -1}, "field 'notes' must be a list of strings"),
    ({"ram_total": 1.5}, "field 'ram_total' must be a non-negative integer (bytes or count), got 1.5"),
    ({"cpu_logical": -1}, "field 'cpu_logical' must be a non-negative integer (bytes or count), got -1"),
    ({"cpu_physical": "8"}, "field 'cpu_physical' must be a non-negative integer (bytes or count), got '8'"),
    ({"ram_available": None, "disk_free": -3}, "field 'disk_free' must be a non-negative integer (bytes or count), got -3"),
    ({"driver_version": 550, "ram_total": -1}, "field 'driver_version' must be a string, got 550"),
    ({"cuda_driver_version": 12.4}, "field 'cuda_driver_version' must be a string, got 12.4"),
    ({"disk_path": 1}, "field 'disk_path' must be a string, got 1"),
    ({"hostname": []}, "field 'hostname' must be a string, got []"),
    ({"source": 1}, "field 'source' must be a string, got 1"),
    ({"created": 1}, "field 'created' must be a string, got 1"),
]


@pytest.mark.parametrize(("data", "message"), PROFILE_ERRORS, ids=[m.split("'")[1] for _, m in PROFILE_ERRORS])
def test_profile_from_dict_errors_are_unchanged(data, message):
    with pytest.raises(UsageError) as e:
        hardware.profile_from_dict(data, where="p.json")
    assert e.value.message == f"p.json: {message}"
    assert e.value.hint == "write the file with `ezrunner probe -o FILE` on the target"


def test_profile_from_dict_defaults():
    data = {"gpus": [_G, {"memory_total": 2048, "compute_capability": "7.5", "index": 5, "name": "X", "uuid": "u",
                          "memory_free": 0}], "ram_total": 0, "notes": ["a"], "source": ""}
    prof = hardware.profile_from_dict(data)
    assert prof.gpus == [hardware.GpuInfo(0, "GPU", 1024, "8.0"), hardware.GpuInfo(5, "X", 2048, "7.5", "u", 0)]
    assert (prof.ram_total, prof.notes, prof.source, prof.hostname) == (0, ["a"], "file", None)
    assert hardware.profile_from_dict({}).to_dict() == {
        "format": "ezrunner-profile/1", "gpus": [], "driver_version": None, "cuda_driver_version": None,
        "cpu_logical": None, "cpu_physical": None, "ram_total": None, "ram_available": None, "disk_path": None,
        "disk_free": None, "hostname": None, "source": "file", "notes": [], "created": None,
    }
