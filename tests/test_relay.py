"""core.relay: the one thread relay behind downloads, logs, the bundle writer and hub deadlines."""

from __future__ import annotations

import threading
import time

import pytest
from ezrunner.core.relay import DeadlineExceeded, Empty, ThreadRelay, call_with_deadline, relay


def test_items_arrive_in_order_then_the_result():
    def work(put, _stop):
        for i in range(5):
            put(i)
        return "done"

    def consume():
        result = yield from relay(work, name="t")
        return result

    gen = consume()
    seen = []
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        assert stop.value == "done"
    assert seen == [0, 1, 2, 3, 4]


def test_the_works_exception_is_raised_on_the_callers_thread():
    def work(put, _stop):
        put("first")
        raise ValueError("boom")

    gen = relay(work, name="t")
    assert next(gen) == "first"
    with pytest.raises(ValueError, match="boom"):
        next(gen)


def test_closing_the_generator_stops_the_work_and_waits_for_it():
    ended = threading.Event()

    def work(put, stop):
        try:
            while not stop.is_set():
                put("tick")
                time.sleep(0.01)
        finally:
            ended.set()

    gen = relay(work, name="t")
    assert next(gen) == "tick"
    gen.close()
    assert ended.is_set()  # close() returned only after the work ended


def test_on_idle_runs_while_waiting_and_may_cancel():
    calls = []
    release = threading.Event()

    def work(_put, stop):
        stop.wait(5)
        release.set()

    def on_idle():
        calls.append(1)
        if len(calls) >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        for _ in relay(work, name="t", poll=0.01, on_idle=on_idle):
            pass
    assert release.is_set()  # the work was told to stop and was waited for


def test_get_times_out_with_empty_and_ends_with_stop_iteration():
    gate = threading.Event()

    def work(put, _stop):
        gate.wait(5)
        put("x")

    with ThreadRelay(work, name="t") as r:
        with pytest.raises(Empty):
            r.get(timeout=0.01)
        gate.set()
        assert r.get(timeout=5) == "x"
        with pytest.raises(StopIteration):
            r.get(timeout=5)
        assert r.finished


def test_a_bounded_queue_does_not_block_a_stopped_producer():
    def work(put, _stop):
        for i in range(100):
            put(i)

    r = ThreadRelay(work, name="t", maxsize=1).start()
    assert r.get(timeout=5) == 0
    r.close()  # the producer is blocked on a full queue; stop must free it
    assert r.wait(5)


def test_call_with_deadline():
    assert call_with_deadline(lambda: 42, 5, name="t") == 42
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(lambda: 1 / 0, 5, name="t")
    with pytest.raises(DeadlineExceeded, match="slow did not answer within 0.05s"):
        call_with_deadline(lambda: time.sleep(2), 0.05, name="slow")
