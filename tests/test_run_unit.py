"""Run-side pieces that need no Docker engine: line reassembly, labels, GPUs,
ports, failure causes."""

from __future__ import annotations

import json
import random
import socket

import pytest
from ezrunner.core.bundle.format import BundleError
from ezrunner.core.errors import EzError, UsageError
from ezrunner.core.run import (
    BundleLabels,
    LineAssembler,
    RunLabels,
    StartOptions,
    default_name,
    device_requests_for,
    explain_start_error,
    follow_logs,
    likely_cause,
    parse_gpus,
    port_in_use,
    ready_timeout,
    start,
)
from support_run import mini_labels


def test_lines_are_reassembled_from_chunks_cut_anywhere():
    text = "first line\nsecond é line ünïcode\r\nprogress 10%\rprogress 20%\rdone\n\nlast without newline"
    data = text.encode()
    expected = ["first line", "second é line ünïcode", "progress 10%", "progress 20%", "done", "", "last without newline"]
    rnd = random.Random(7)
    for _ in range(200):
        cuts = sorted(rnd.sample(range(1, len(data)), rnd.randint(1, 12)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=False)]
        asm = LineAssembler()
        lines = []
        for c in chunks:
            lines += asm.feed(c)
        lines += asm.flush()
        assert lines == expected, chunks


def test_crlf_split_between_chunks_is_one_line_break():
    asm = LineAssembler()
    assert asm.feed(b"a\r") == []
    assert asm.feed(b"\nb\n") == ["a", "b"]
    assert asm.flush() == []


def test_labels_are_the_only_source_and_checked():
    labels = BundleLabels.from_labels(mini_labels())
    assert labels.port == 8000 and labels.ready_path == "/ready" and labels.api_key_env == "EZRUNNER_API_KEY"
    assert labels.serve_args == ("python3", "/opt/mini/server.py") and labels.needs_gpu is False
    vllm = mini_labels() | {"ezrunner.engine": "vllm", "ezrunner.needs-gpu": "true", "ezrunner.ready-path": "/health",
                            "ezrunner.api-key-env": "VLLM_API_KEY"}
    assert BundleLabels.from_labels(vllm).needs_gpu is True
    broken = dict(mini_labels())
    del broken["ezrunner.ready-path"]
    with pytest.raises(BundleError, match="lacks the label.s. ezrunner.ready-path"):
        BundleLabels.from_labels(broken)
    with pytest.raises(BundleError, match="ezrunner.serve-args"):
        BundleLabels.from_labels(mini_labels() | {"ezrunner.serve-args": "python3 -m x"})
    with pytest.raises(BundleError, match="ezrunner.port"):
        BundleLabels.from_labels(mini_labels() | {"ezrunner.port": "http"})
    with pytest.raises(BundleError, match="not an ezrunner image"):
        BundleLabels.from_labels({})


def test_gpu_requests():
    cpu = BundleLabels.from_labels(mini_labels())
    gpu = BundleLabels.from_labels(mini_labels() | {"ezrunner.needs-gpu": "true", "ezrunner.device": "cuda"})
    assert device_requests_for(None, cpu) == []
    (req,) = device_requests_for(None, gpu)
    assert req["Count"] == -1 and req["Capabilities"] == [["gpu"]]
    (req,) = device_requests_for(parse_gpus("0,1"), gpu)
    assert req["DeviceIDs"] == ["0", "1"] and req["Capabilities"] == [["gpu"]]
    (req,) = device_requests_for("all", cpu)  # asked for although not needed
    assert req["Count"] == -1
    with pytest.raises(UsageError, match="needs a GPU"):
        device_requests_for("none", gpu)
    with pytest.raises(UsageError, match="--gpus"):
        parse_gpus("first")
    assert parse_gpus(None) is None and parse_gpus("ALL") == "all"


def test_port_in_use_detection():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        assert port_in_use("0.0.0.0", port)
    assert not port_in_use("127.0.0.1", port)
    with socket.socket() as s:  # a listener on every address blocks 127.0.0.1 too
        s.bind(("0.0.0.0", 0))
        s.listen()
        assert port_in_use("127.0.0.1", s.getsockname()[1])


class _ApiError(Exception):
    """Shaped like docker.errors.APIError (explanation text from the daemon)."""

    def __init__(self, explanation):
        super().__init__(explanation)
        self.explanation = explanation


def test_start_errors_become_one_line_with_the_fix():
    err = explain_start_error(_ApiError('could not select device driver "" with capabilities: [[gpu]]'), host="127.0.0.1", port=8000)
    assert "NVIDIA container runtime is missing" in err.message and "nvidia-container-toolkit" in err.hint
    assert "\n" not in err.message
    err = explain_start_error(_ApiError("driver failed programming external connectivity: Bind for 127.0.0.1:8000 failed: port is already allocated"),
                              host="127.0.0.1", port=8000)
    assert err.message == "port 8000 on 127.0.0.1 is already in use"
    err = explain_start_error(_ApiError("failed: listen tcp4 10.9.9.9:8000: bind: cannot assign requested address"), host="10.9.9.9", port=8000)
    assert isinstance(err, UsageError) and "--host 10.9.9.9" in err.message
    assert isinstance(explain_start_error(_ApiError("weird\nsecond line"), host="h", port=1), EzError)


def test_likely_causes():
    assert likely_cause(["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"]) == "out of memory"
    assert likely_cause(["RuntimeError: Found no NVIDIA driver on your system."]).startswith("a CUDA error")
    assert likely_cause(["CUDA error: no kernel image is available for execution on the device"]).startswith("a CUDA error")
    assert likely_cause(["all fine"], oom_killed=True).startswith("out of memory")
    assert likely_cause(["FileNotFoundError: model.safetensors"]).startswith("a file of the model")
    assert likely_cause(["nothing to see"]) is None
    assert "137" in likely_cause([], exit_code=137)


def test_ready_timeout_scales_with_model_size():
    assert ready_timeout(0, "transformers") == 120
    assert ready_timeout(16 * 10**9, "vllm") > ready_timeout(10**9, "vllm") > ready_timeout(10**9, "transformers")
    assert 900 < ready_timeout(16 * 10**9, "vllm") < 1800  # about 16 minutes


def test_default_container_name():
    assert default_name("Qwen/Qwen2.5 0.5B") == "Qwen-Qwen2.5-0.5B"
    assert default_name("///") == "ezrunner"
    assert json.dumps(default_name("tiny")) == '"tiny"'


# ---- follow_logs on the thread relay, with a fake log stream (no Docker)


class _FakeStream:
    """Shaped like docker's CancellableStream: iterable, ``close()`` ends it."""

    def __init__(self, chunks, *, gap=0.0, fail_after=None, block=False):
        import threading

        self.chunks, self.gap, self.fail_after, self.block = list(chunks), gap, fail_after, block
        self.closed = threading.Event()

    def __iter__(self):
        import time

        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise OSError("connection reset")
            if self.gap:
                time.sleep(self.gap)
            yield chunk
        while self.block and not self.closed.wait(0.05):
            pass  # follow mode: waits for more until closed

    def close(self):
        self.closed.set()


class _FakeContainer:
    def __init__(self, stream):
        self.stream = stream
        self.asked = {}

    def logs(self, **kwargs):
        self.asked = kwargs
        return self.stream


def test_follow_logs_reassembles_and_ends_with_the_stream():
    stream = _FakeStream([b"one\ntw", b"o\nthree"])
    c = _FakeContainer(stream)
    lines = [ln for batch in follow_logs(c, follow=False, tail=5) for ln in batch]
    assert lines == ["one", "two", "three"]
    assert c.asked == {"stream": True, "follow": False, "tail": 5, "stdout": True, "stderr": True}
    assert stream.closed.is_set()


def test_follow_logs_batches_at_most_max_lines():
    stream = _FakeStream([b"".join(b"%d\n" % i for i in range(25))])
    batches = list(follow_logs(_FakeContainer(stream), max_lines=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [ln for b in batches for ln in b] == [str(i) for i in range(25)]


def test_follow_logs_a_broken_stream_ends_the_batches_after_the_last_line():
    stream = _FakeStream([b"kept\npartial", b"never"], fail_after=1)
    assert [ln for b in follow_logs(_FakeContainer(stream)) for ln in b] == ["kept", "partial"]


def test_follow_logs_stop_event_and_close_end_a_following_stream():
    import threading
    import time

    stop = threading.Event()
    stream = _FakeStream([b"a\n"], block=True)
    gen = follow_logs(_FakeContainer(stream), stop_event=stop)
    assert next(gen) == ("a",)
    stop.set()
    t0 = time.monotonic()
    assert list(gen) == []
    assert time.monotonic() - t0 < 2 and stream.closed.is_set()
    # Closing the generator (the CLI's Ctrl-C, a TUI screen leaving) closes the stream too.
    stream = _FakeStream([b"b\n"], block=True)
    gen = follow_logs(_FakeContainer(stream))
    assert next(gen) == ("b",)
    gen.close()
    assert stream.closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "ezrunner-logs" and t.is_alive()]


# ---- the run labels and the start options


def test_run_labels_round_trip_and_defaults():
    labels = RunLabels(host="0.0.0.0", port="8080", bundle="b.tar", api_key_set=True)
    assert labels.to_labels() == {"ezrunner.run.managed": "true", "ezrunner.run.host": "0.0.0.0",
                                  "ezrunner.run.port": "8080", "ezrunner.run.bundle": "b.tar",
                                  "ezrunner.run.api-key": "set"}
    assert RunLabels.from_labels(labels.to_labels()) == labels
    assert RunLabels.from_labels(None) == RunLabels(managed=False)
    assert RunLabels().to_labels()["ezrunner.run.api-key"] == "none"


def test_start_options_check_name_port_and_gpus_before_docker():
    class _Image:
        id = "sha256:" + "0" * 64
        tags = ["ezrunner/mini:test"]
        labels = mini_labels()

    with pytest.raises(UsageError, match="--gpus"):
        start(None, _Image(), StartOptions(gpus="first"))
    with pytest.raises(UsageError, match="--name: 'bad name'"):
        start(None, _Image(), StartOptions(name="bad name"))
    with pytest.raises(UsageError, match="--port: 70000"):
        start(None, _Image(), StartOptions(port=70000))
    assert StartOptions().host == "127.0.0.1" and StartOptions().publish


def test_exit_watcher_reports_the_first_exit_code_and_closes(monkeypatch):
    import threading

    import docker
    from ezrunner.core.run.ready import _ExitWatcher

    exited = threading.Event()

    class _Api:
        closed = False

        def wait(self, cid, condition):
            assert (cid, condition) == ("c1", "next-exit")
            exited.wait(5)
            return {"StatusCode": 3}

        def close(self):
            self.closed = True

    api = _Api()
    monkeypatch.setattr(docker, "from_env", lambda **_kw: type("C", (), {"api": api})())
    watcher = _ExitWatcher(type("Ctr", (), {"id": "c1", "name": "x"})())
    assert watcher.code is None and watcher.result(timeout=0.05) is None
    exited.set()
    assert watcher.result(timeout=5) == 3 and watcher.code == 3
    watcher.close()
    assert api.closed
