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
