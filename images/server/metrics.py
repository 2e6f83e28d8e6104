"""Prometheus metrics of one server instance (its own registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()

PREFIX = "ezrunner"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests answered, by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter(f"{PREFIX}_completion_tokens", "Completion tokens generated", registry=r)
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "Time from request arrival to its first generated token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            f"{PREFIX}_e2e_request_latency_seconds",
            "Time from request arrival to its last token (generation) or answer (embeddings)",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.running = Gauge(f"{PREFIX}_requests_running", "Requests being processed by the engine", registry=r)
        self.waiting = Gauge(f"{PREFIX}_requests_waiting", "Requests admitted and waiting for an engine slot", registry=r)
        self.rejected = Counter(f"{PREFIX}_requests_rejected", "Requests refused with 429 (queue full)", registry=r)
        self.cancelled = Counter(
            f"{PREFIX}_requests_cancelled", "Generations cancelled because the client went away", registry=r
        )
        self.stalled = Counter(
            f"{PREFIX}_streams_stalled", "Streams cancelled because the client read nothing for the write timeout",
            registry=r,
        )
        self.connections_open = Gauge(f"{PREFIX}_connections_open", "Open HTTP connections", registry=r)
        self.connections_closed = Counter(
            f"{PREFIX}_connections_closed_by_server",
            "Connections the server closed itself: idle_timeout (no request headers in time), evicted (the "
            "longest-idle one, at the connection limit), refused (503 at the limit), stalled_close (client "
            "not reading what was left)",
            ["reason"],
            registry=r,
        )
        self.batch_sequences = Histogram(
            f"{PREFIX}_batch_sequences",
            "Sequences in each forward pass of the continuous-batching engine",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Counter(f"{PREFIX}_batch_tokens", "Tokens fed through the forward passes", registry=r)
        self.max_batch_sequences = Gauge(
            f"{PREFIX}_batch_sequences_max", "Most sequences seen in one forward pass since start", registry=r
        )
        self.ready = Gauge(f"{PREFIX}_ready", "1 once the model is loaded and warmed up", registry=r)
        self._max_batch = 0

    def observe_batch(self, sequences: int, tokens: int) -> None:
        self.batch_sequences.observe(sequences)
        self.batch_tokens.inc(tokens)
        if sequences > self._max_batch:
            self._max_batch = sequences
            self.max_batch_sequences.set(sequences)

    def render(self) -> bytes:
        return generate_latest(self.registry)
