"""The Docker engine, as pack and run both use it: connect, map errors to one
line, look images and containers up. docker is imported inside the functions, so
importing this module costs nothing."""

from __future__ import annotations

import os
import re
from typing import Any

from ezrunner.core.errors import EzError

_UNREACHABLE = ("connection refused", "no such file", "filenotfounderror", "connection aborted",
                "error while fetching server api version", "timed out", "name or service not known")


def connect(timeout: int = 3600) -> Any:
    """A docker client with a long timeout (builds and loads of tens of GB take
    minutes); daemon problems become one-line :class:`EzError`s."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise docker_error(exc) from None


def first_line(text: str, limit: int = 300) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line[:limit]


def api_message(exc: BaseException) -> str:
    """The daemon's own explanation of an API error, on one line."""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8", "replace")
        return first_line(str(explanation))
    return first_line(str(exc))


def docker_error(exc: BaseException) -> EzError:
    """One line, with the fix, for a Docker client or daemon error."""
    text = str(exc)
    low = text.lower()
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if "permission denied" in low:
        return EzError(
            f"permission denied on the Docker socket ({host})",
            hint="add your user to the 'docker' group (then log in again) or run as root",
        )
    if any(s in low for s in _UNREACHABLE):
        return EzError(
            f"the Docker daemon is not running or not reachable ({host})",
            hint="start it (sudo systemctl start docker) or set DOCKER_HOST",
        )
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    return EzError(f"Docker: {first}")


def _or_none(get: Any, ref: str) -> Any:
    """``get(ref)``, or None when the engine has no such object (404)."""
    import docker

    try:
        return get(ref)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        if getattr(exc, "status_code", None) == 404:
            return None
        raise docker_error(exc) from None


def image_or_none(client: Any, ref: str) -> Any:
    """The image named ``ref`` (tag or id), or None when the engine lacks it."""
    return _or_none(client.images.get, ref)


def require_image(client: Any, ref: str) -> Any:
    """The local image ``ref``; an :class:`EzError` saying how to bring it offline."""
    img = image_or_none(client, ref)
    if img is None:
        safe = re.sub(r"[^\w.-]+", "_", ref)
        raise EzError(
            f"base image {ref} is not in the local Docker engine",
            hint=(f"on a machine with network: docker pull {ref} && docker save {ref} -o {safe}.tar; "
                  f"then here: docker load -i {safe}.tar (or pick another with --base-image)"),
        )
    return img


def container_or_none(client: Any, name: str) -> Any:
    """The container ``name`` (or id), or None."""
    return _or_none(client.containers.get, name)
