"""Server settings and the load error (standard library only: imported for --help)."""

from __future__ import annotations

from dataclasses import dataclass

# What the packer and the run side need to know about this server.
PORT = 8000  # the port inside the image
READY_PATH = "/ready"  # 503 until the model is loaded and warmed up, then 200
HEALTH_PATH = "/health"  # 200 while the process lives
API_KEY_ENV = "EZRUNNER_API_KEY"  # how the run side passes the key to a container


class LoadError(Exception):
    """The model cannot be served; the message says why and what to do."""


@dataclass
class ServerConfig:
    model_dir: str
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_model_len: int | None = None
    max_concurrency: int = 32
    max_queue: int = 256
    trust_remote_code: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    # connections (see connections.py): open at most this many; a new one past the limit
    # closes the longest-idle one, or is refused with 503 when none is idle
    max_connections: int = 1024
    header_timeout: float = 10.0  # seconds to send a request's headers (connect or keep-alive)
    keep_alive_timeout: float = 5.0  # an idle keep-alive connection is closed after this
    body_timeout: float = 60.0  # seconds to send the whole body once its headers are in
    stream_write_timeout: float = 30.0  # a stream whose client reads nothing for this long is cancelled


API_KEY_HINT = "printable ASCII without spaces (HTTP headers carry ASCII only)"


def check_api_key(key: str | None, source: str) -> str | None:
    """The key, if every character is visible ASCII (``!`` to ``~``); else :class:`LoadError`.
    A key HTTP clients cannot send byte for byte could never authenticate anyone."""
    if key is None:
        return None
    if not key:
        raise LoadError(f"the API key from {source} is empty")
    if not all("!" <= c <= "~" for c in key):
        raise LoadError(f"the API key from {source} must be {API_KEY_HINT}")
    return key
