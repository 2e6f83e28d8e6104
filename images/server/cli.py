"""Command line of the server: ``python -m ezrunner_server MODEL_DIR [options]``.

The same options back ``ezrunner serve`` (see :func:`add_arguments`). Only the
standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import API_KEY_ENV, LoadError, ServerConfig, check_api_key

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def _whole_number(minimum: int, what: str, maximum: int | None = None):
    """An argparse type: a whole number >= ``minimum`` (and <= ``maximum``, for ports)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"ports go up to {maximum}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


_positive = _whole_number(1, "at least 1")
_non_negative = _whole_number(0, "0 or more")
_port = _whole_number(0, "0 or more", maximum=65535)

_DEFAULT = ServerConfig(model_dir="", served_model_name="")  # the defaults, in one place
# options that go to ServerConfig unchanged (same name)
_PLAIN_OPTIONS = ("host", "port", "device", "dtype", "max_model_len", "max_concurrency", "max_queue",
                  "trust_remote_code", "max_connections", "header_timeout", "stream_write_timeout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULT
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a local model folder (config.json, weights, tokenizer)")
    parser.add_argument("--host", default=d.host,
                        help=f"address to listen on (default {d.host}; use 0.0.0.0 to accept other machines)")
    parser.add_argument("--port", type=_port, default=d.port, help=f"TCP port (default {d.port})")
    parser.add_argument("--served-model-name", metavar="NAME",
                        help="the model name clients send (default: the folder's name)")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key", metavar="KEY",
                     help=f"require 'Authorization: Bearer KEY' on /v1 endpoints (default: env {API_KEY_ENV}); "
                     "visible in the process list: prefer --api-key-file or the env var")
    key.add_argument("--api-key-file", metavar="PATH",
                     help="read the API key from the first line of PATH ('-': standard input)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device,
                        help="where to run the model (default auto: cuda when torch sees a GPU)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=d.dtype,
                        help="compute dtype (default auto: the weights' dtype on GPU, float32 on CPU)")
    parser.add_argument("--max-model-len", type=_positive, metavar="N",
                        help="context length in tokens (default: the model's)")
    parser.add_argument("--max-concurrency", type=_positive, default=d.max_concurrency, metavar="N",
                        help=f"requests batched together at most (default {d.max_concurrency})")
    parser.add_argument("--max-queue", type=_non_negative, default=d.max_queue, metavar="N",
                        help=f"requests allowed to wait beyond that; more get 429 (default {d.max_queue})")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow models that ship their own Python code (off by default)")
    parser.add_argument("--max-connections", type=_positive, default=d.max_connections, metavar="N",
                        help=f"open connections at most; past it the longest-idle one is closed, or the new one "
                        f"gets 503 (default {d.max_connections})")
    parser.add_argument("--header-timeout", type=_seconds, default=d.header_timeout, metavar="S",
                        help=f"seconds a connection may take to send a request's headers (default "
                        f"{d.header_timeout:g})")
    parser.add_argument("--stream-write-timeout", type=_seconds, default=d.stream_write_timeout, metavar="S",
                        help=f"cancel a stream whose client reads nothing for S seconds (default "
                        f"{d.stream_write_timeout:g})")


def read_api_key(args: argparse.Namespace) -> str | None:
    """The key from --api-key, --api-key-file (a file or '-' for stdin: kept out of the process
    list) or the environment; None when none is set. :class:`LoadError` if it is unusable."""
    if getattr(args, "api_key_file", None):
        path = args.api_key_file
        source = "standard input" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else Path(path).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LoadError(f"cannot read the API key from {source}: {getattr(exc, 'strerror', None) or exc}") from None
        lines = text.splitlines()
        return check_api_key(lines[0].strip() if lines else "", source)
    if args.api_key is not None:
        return check_api_key(args.api_key, "--api-key")
    return check_api_key(os.environ.get(API_KEY_ENV) or None, API_KEY_ENV)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The settings the options describe; :class:`LoadError` for an unusable API key."""
    model_dir = Path(args.model_dir).expanduser()
    return ServerConfig(
        model_dir=str(model_dir),
        served_model_name=args.served_model_name or model_dir.resolve().name,
        api_key=read_api_key(args),
        **{name: getattr(args, name) for name in _PLAIN_OPTIONS},
    )


def precheck(config: ServerConfig) -> str:
    """Fast checks before the HTTP server starts; returns the declared capability.
    Raises :class:`LoadError` with a message for the operator."""
    from .engine import check_remote_code, declared_capability, read_json

    model_dir = Path(config.model_dir)
    check_api_key(config.api_key, "the settings")
    if not model_dir.is_dir():
        raise LoadError(f"model folder {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        raise LoadError(f"{model_dir} is not a model folder (no config.json)")
    if not config.served_model_name or any(c.isspace() for c in config.served_model_name):
        raise LoadError(f"--served-model-name {config.served_model_name!r} must be a non-empty name without spaces")
    capability = declared_capability(model_dir)
    os.environ["HF_HUB_OFFLINE"] = "1"
    check_remote_code(model_dir, read_json(model_dir / "config.json"), config.trust_remote_code)
    return capability


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def uvicorn_config(app, config: ServerConfig, state):
    """uvicorn's settings: bounded connections (connections.py), headers of at most 16 KiB,
    idle keep-alive connections closed after ``keep_alive_timeout``, a rate-limited log."""
    import uvicorn

    from .connections import ConnectionGuard, guarded_protocol, limit_log_rate, raise_fd_limit

    limit = raise_fd_limit(config.max_connections)
    if limit < config.max_connections:
        logging.getLogger("ezrunner_server").warning(
            "the open-files limit allows %d connections, not %d", limit, config.max_connections)
    guard = ConnectionGuard(config, state.metrics, limit=limit)
    limit_log_rate()
    return uvicorn.Config(
        app, host=config.host, port=config.port, log_level="info", lifespan="on",
        timeout_graceful_shutdown=5, log_config=None, http=guarded_protocol(guard),
        timeout_keep_alive=config.keep_alive_timeout, h11_max_incomplete_event_size=16 * 1024,
        backlog=min(2048, limit),
    )


def serve(config: ServerConfig) -> int:
    """Run the HTTP server until interrupted; returns the exit status."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from .app import create_app
    from .drain import DrainingServer, drain_timeout

    app = create_app(config)
    state = app.state
    server = DrainingServer(uvicorn_config(app, config, state), state, drain_timeout())
    state.on_load_failure = lambda _msg: setattr(server, "should_exit", True)
    logging.getLogger("ezrunner_server").info(
        "listening on http://%s:%d (model loads in the background; GET /ready says when)", config.host, config.port)
    server.run()
    if state.load_error:
        print(f"ezrunner-server: error: {state.load_error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ezrunner_server",
        description="OpenAI-compatible inference server (continuous batching on Transformers).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        config = config_from_args(args)
        precheck(config)
    except LoadError as exc:
        print(f"ezrunner-server: error: {exc}", file=sys.stderr)
        return 2
    return serve(config)
