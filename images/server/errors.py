"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .protocol import ERROR_CODES, ErrorInfo, ErrorResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error answered to the client in the OpenAI error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,  # noqa: A002 - the OpenAI field name
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or error_type_for(status)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorInfo(message=message, type=type_, param=param, code=code)).model_dump()


def error_type_for(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def engine_error(request_id: str) -> APIError:
    """A request that failed inside the engine (the log has the details under its id)."""
    return APIError(500, f"The engine failed on this request (request id {request_id}).", code="engine_error",
                    headers={"X-Request-Id": request_id})


# ------------------------------------------------------------------------------------------ validation

RequestT = TypeVar("RequestT", bound=BaseModel)


def _param(loc: tuple[int | str, ...]) -> str:
    """``("messages", 0, "role")`` -> ``messages[0].role``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def from_validation_error(exc: ValidationError) -> APIError:
    """The first problem pydantic found, as the 400 the client sees. The protocol's own
    checks raise errors typed with the OpenAI ``code`` whose message names ``{param}``;
    a missing required field is pydantic's ``missing``."""
    first = exc.errors(include_url=False)[0]
    param = _param(first["loc"])
    if first["type"] == "missing":
        return APIError(400, f"'{param}' is a required property", param=param, code="missing_required_parameter")
    if first["type"] in ERROR_CODES:
        return APIError(400, first["msg"].replace("{param}", param), param=param, code=first["type"])
    return APIError(400, f"'{param}': {first['msg']}", param=param, code="invalid_value")  # not expected


def parse(model: type[RequestT], body: dict[str, Any]) -> RequestT:
    """Validate a request body against its protocol model (400 on the first problem)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
