"""Network helpers the remote hubs share: a quick TCP reachability check, a
deadline around a blocking client call, quiet hub loggers and one-line reasons."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

from ezrunner.core.errors import EzError
from ezrunner.core.relay import DeadlineExceeded, call_with_deadline

T = TypeVar("T")
CONNECT_TIMEOUT = 3.0  # seconds, the reachability check


class SourceUnavailable(EzError):
    """A remote source cannot be reached (no network, offline mode, timeout)."""


def truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hf_offline() -> bool:
    return truthy("HF_HUB_OFFLINE") or truthy("TRANSFORMERS_OFFLINE")


def _proxy_for(scheme: str, host: str | None) -> str | None:
    proxy = os.environ.get("HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY") or os.environ.get(
        "https_proxy" if scheme == "https" else "http_proxy"
    )
    no_proxy = (os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "").split(",")
    if proxy and host and not any(n.strip() and host.endswith(n.strip().lstrip(".")) for n in no_proxy):
        return proxy
    return None


def check_reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Open (and close) a TCP connection to ``url``'s host (or the proxy in the
    environment); raise :class:`SourceUnavailable` with a one-line reason."""
    u = urlparse(url)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    proxy = _proxy_for(u.scheme, host)
    if proxy:
        pu = urlparse(proxy if "://" in proxy else "http://" + proxy)
        host, port = pu.hostname, pu.port or 80
    if not host:
        raise SourceUnavailable(f"bad endpoint URL {url!r}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror as exc:
        raise SourceUnavailable(f"cannot resolve {host} ({exc.strerror or exc}); no network?") from None
    except TimeoutError:
        raise SourceUnavailable(f"{host}:{port} did not answer within {timeout:g}s; no network?") from None
    except OSError as exc:
        raise SourceUnavailable(f"cannot connect to {host}:{port} ({exc.strerror or exc})") from None


def with_deadline(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` on a daemon thread; :class:`SourceUnavailable` after ``timeout`` seconds."""
    try:
        return call_with_deadline(fn, timeout, name=what)
    except DeadlineExceeded as exc:
        raise SourceUnavailable(str(exc)) from None


def quiet_hub_loggers() -> None:
    """The hub clients log retries to stderr ("Retrying in 8s"), which would tear
    through the TUI; their failures reach the user as one-line reasons instead."""
    import logging

    for name in ("huggingface_hub", "modelscope", "modelscope_hub"):
        logger = logging.getLogger(name)
        if logger.level < logging.ERROR:
            logger.setLevel(logging.ERROR)


def is_network_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    return isinstance(exc, (OSError, TimeoutError)) or any(
        k in name for k in ("Connect", "Timeout", "Network", "Offline", "Protocol", "Proxy")
    )


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s text (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def one_line_reason(exc: BaseException) -> str:
    """A short, single-line reason for a failed remote call."""
    if isinstance(exc, EzError):
        return exc.message
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if name == "OfflineModeIsEnabled":
        return "offline mode is on (HF_HUB_OFFLINE)"
    if "Timeout" in name:
        return f"timed out ({text or name})"
    if "Connect" in name or "Network" in name:
        return f"cannot connect ({text or name})"
    return f"{name}: {text}" if text else name
