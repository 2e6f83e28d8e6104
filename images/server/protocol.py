"""The OpenAI protocol as pydantic models: requests, responses, stream chunks, errors.

Requests are validated by the models; every problem is raised as a
``PydanticCustomError`` whose *type* is the OpenAI error ``code`` and whose
message may name the field as ``{param}``. :func:`errors.from_validation_error`
turns the first one into the 400 ``{"error": {...}}`` answer. Unknown fields are
ignored, as the OpenAI API does for most clients. Fields are declared in the
order they are checked: the first error reported is the first one found.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_STOP_SEQUENCES = 4
MAX_EMBEDDING_INPUTS = 2048
ROLES = ("system", "developer", "user", "assistant", "tool")

# ------------------------------------------------------------------------------------------ validators


# the OpenAI ``code`` of every request error the models raise (also the pydantic error type)
ERROR_CODES = frozenset({"invalid_type", "invalid_value", "unsupported_value", "unsupported_parameter",
                         "unsupported_content"})


def invalid(message: str, code: str = "invalid_value") -> PydanticCustomError:
    """A request error; ``{param}`` in ``message`` becomes the field's path."""
    assert code in ERROR_CODES, code
    return PydanticCustomError(code, message)


def _got(v: Any) -> str:
    return type(v).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v: Any, minimum: int | None = None) -> int | None:
    if v is None:
        return None
    if not _is_int(v):
        raise invalid(f"'{{param}}' must be an integer, got {_got(v)}", "invalid_type")
    if minimum is not None and v < minimum:
        raise invalid(f"'{{param}}' must be at least {minimum}, got {v}")
    return v


def _number(v: Any, lo: float, hi: float) -> float | None:
    if v is None:
        return None
    if not _is_number(v):
        raise invalid(f"'{{param}}' must be a number, got {_got(v)}", "invalid_type")
    if not lo <= float(v) <= hi:
        raise invalid(f"'{{param}}' must be between {lo:g} and {hi:g}, got {v}")
    return float(v)


def _boolean(v: Any, say_type: bool = True) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise invalid("'{param}' must be a boolean" + (f", got {_got(v)}" if say_type else ""), "invalid_type")


def _unsupported(refused: bool, by: str = "server") -> None:
    if refused:
        raise invalid(f"'{{param}}' is not supported by this {by}", "unsupported_parameter")


def _refuse_unless(*accepted: Any, by: str = "server"):
    """A validator for a parameter this server cannot honour: null and the listed values (the
    defaults, which change nothing) pass; anything else is refused naming the parameter."""

    def check(v: Any) -> None:
        if v is not None and not any(v == a and type(v) is type(a) for a in accepted):
            raise invalid(f"'{{param}}' is not supported by this {by}", "unsupported_parameter")

    return BeforeValidator(check)


def _refuse_non_empty(kind: type, what: str):
    """A list or object parameter: empty (or null) passes; content is refused."""

    def check(v: Any) -> None:
        if v is None:
            return
        if not isinstance(v, kind):
            raise invalid(f"'{{param}}' must be {what}", "invalid_type")
        if v:
            raise invalid("'{param}' is not supported by this server", "unsupported_parameter")

    return BeforeValidator(check)


RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def _format_type(v: Any) -> str:
    if v not in RESPONSE_FORMATS:
        raise invalid(f"'{{param}}' must be one of {', '.join(RESPONSE_FORMATS)}")
    return v


def _text_only(v: Any) -> Any:
    if v is not None and v.type != "text":
        raise invalid(f"'{{param}}' of type '{v.type}' is not supported by this server (only 'text'): the "
                      "output is not constrained to JSON", "unsupported_parameter")
    return None


def _model_name(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    raise invalid(f"'{{param}}' must be a string, got {_got(v)}", "invalid_type")


def _n(v: Any) -> int | None:
    if _integer(v) not in (None, 1):
        raise invalid(f"only n=1 is supported, got n={v}", "unsupported_value")
    return v


def _top_p(v: Any) -> float | None:
    top_p = _number(v, 0.0, 1.0)
    if top_p == 0.0:
        raise invalid("'{param}' must be greater than 0")
    return top_p


def _stop(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        stops = [v]
    elif isinstance(v, list) and all(isinstance(s, str) for s in v):
        stops = list(v)
    else:
        raise invalid("'{param}' must be a string or a list of strings", "invalid_type")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid(f"'{{param}}' takes at most {MAX_STOP_SEQUENCES} sequences, got {len(stops)}")
    return [s for s in stops if s]


def _object(v: Any) -> Any:
    if v is not None and not isinstance(v, dict):
        raise invalid("'{param}' must be an object", "invalid_type")
    return v


def _role(v: Any) -> str:
    if not isinstance(v, str) or v not in ROLES:
        raise invalid(f"'{{param}}' must be one of {', '.join(ROLES)}")
    return v


def _content(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if not isinstance(v, list):
        raise invalid("'{param}' must be a string or an array of parts", "invalid_type")
    for j, part in enumerate(v):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise invalid(f"'{{param}}[{j}]' must be a text part; this server serves a text-only model",
                          "unsupported_content")
    return "".join(part["text"] for part in v)


def _messages(v: Any) -> Any:
    if not isinstance(v, list):
        raise invalid(f"'{{param}}' must be an array, got {_got(v)}", "invalid_type")
    if not v:
        raise invalid("'{param}' must contain at least one message")
    return v


def _single_prompt(v: Any) -> str:
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str):
        v = v[0]
    if not isinstance(v, str):
        raise invalid("'{param}' must be a string (a single prompt per request)", "invalid_type")
    return v


def _inputs(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and not v:
        raise invalid("'{param}' must not be empty")
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise invalid("'{param}' must be a string or a list of strings", "invalid_type")
    if len(v) > MAX_EMBEDDING_INPUTS:
        raise invalid(f"'{{param}}' takes at most {MAX_EMBEDDING_INPUTS} items, got {len(v)}")
    return v


def _encoding_format(v: Any) -> str | None:
    if v not in (None, "float", "base64"):
        raise invalid("'{param}' must be 'float' or 'base64'")
    return v


TokenCount = Annotated[int | None, BeforeValidator(lambda v: _integer(v, minimum=1))]
Penalty = Annotated[float, BeforeValidator(lambda v: _number(v, -2.0, 2.0) or 0.0)]
Flag = Annotated[bool | None, BeforeValidator(lambda v: _boolean(v))]
Unsupported = Annotated[None, BeforeValidator(lambda v: _unsupported(bool(v)))]
RefusedObject = Annotated[None, _refuse_non_empty(dict, "an object")]
RefusedList = Annotated[None, _refuse_non_empty(list, "an array")]
Refused = Annotated[None, _refuse_unless()]


# ------------------------------------------------------------------------------------------ requests


class OpenAIRequest(BaseModel):
    """The ``model`` field every endpoint checks first (404 when it names another model)."""

    model: Annotated[str | None, BeforeValidator(_model_name)] = None


class StreamOptions(BaseModel):
    include_usage: Annotated[bool | None, BeforeValidator(lambda v: _boolean(v, say_type=False))] = None


class SamplingRequest(OpenAIRequest):
    """Fields shared by the chat and the legacy completions endpoint."""

    n: Annotated[int | None, BeforeValidator(_n)] = None
    max_tokens: TokenCount = None
    max_completion_tokens: TokenCount = None  # chat only (CompletionRequest ignores it)
    temperature: Annotated[float | None, BeforeValidator(lambda v: _number(v, 0.0, 2.0))] = None
    top_p: Annotated[float | None, BeforeValidator(_top_p)] = None
    seed: Annotated[int | None, BeforeValidator(lambda v: _integer(v))] = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logprobs: Annotated[None, BeforeValidator(lambda v: _unsupported(v not in (None, False, 0)))] = None
    stop: Annotated[list[str], BeforeValidator(_stop)] = Field(default_factory=list)
    ignore_eos: Flag = None  # vLLM's extra: generate exactly max_tokens
    stream: Flag = None
    stream_options: Annotated[StreamOptions | None, BeforeValidator(_object)] = None
    # parameters that would change the output and that this server cannot honour: refused
    # by name when set to anything but their default (see docs/commands/serve.md)
    logit_bias: RefusedObject = None

    @property
    def token_limit(self) -> int | None:
        """Completion tokens asked for (None: as many as the context leaves)."""
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatMessage(BaseModel):
    role: Annotated[str, BeforeValidator(_role)] = Field(default=None, validate_default=True)
    content: Annotated[str, BeforeValidator(_content)] = ""

    @model_validator(mode="before")
    @classmethod
    def _must_be_object(cls, v: Any) -> Any:
        return _object(v)

    def for_template(self) -> dict[str, str]:
        """The message as chat templates expect it (``developer`` is read as ``system``)."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.content}


class ResponseFormat(BaseModel):
    type: Annotated[str, BeforeValidator(_format_type)] = Field(default=None, validate_default=True)


class _ChatInput(OpenAIRequest):
    messages: Annotated[list[ChatMessage], BeforeValidator(_messages)]


class ChatCompletionRequest(SamplingRequest, _ChatInput):  # (bases in this order: messages are checked first)
    top_logprobs: Annotated[None, _refuse_unless(0)] = None
    response_format: Annotated[ResponseFormat | None, BeforeValidator(_object), AfterValidator(_text_only)] = None
    tools: RefusedList = None
    tool_choice: Annotated[None, _refuse_unless("none")] = None
    functions: RefusedList = None
    function_call: Annotated[None, _refuse_unless("none")] = None
    parallel_tool_calls: Flag = None  # no tools: nothing to call in parallel
    audio: Refused = None
    modalities: Annotated[None, _refuse_unless(["text"])] = None
    prediction: Refused = None
    reasoning_effort: Refused = None
    verbosity: Refused = None
    web_search_options: Refused = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class _CompletionInput(OpenAIRequest):
    prompt: Annotated[str, BeforeValidator(_single_prompt)]
    echo: Unsupported = None
    suffix: Unsupported = None


class CompletionRequest(SamplingRequest, _CompletionInput):
    best_of: Annotated[None, BeforeValidator(lambda v: _unsupported(_integer(v, minimum=1) not in (None, 1)))] = None
    # the legacy API has no max_completion_tokens: accepted and ignored, unchecked
    max_completion_tokens: Any = Field(default=None, exclude=True)


class EmbeddingRequest(OpenAIRequest):
    input: Annotated[list[str], BeforeValidator(_inputs)]
    encoding_format: Annotated[Literal["float", "base64"] | None, BeforeValidator(_encoding_format)] = None
    dimensions: Annotated[None, BeforeValidator(lambda v: _unsupported(v is not None, by="model"))] = None


# ------------------------------------------------------------------------------------------ responses
# Field order is the JSON key order clients have always seen.


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> UsageInfo:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None


class CompletionChoice(BaseModel):
    """A choice of /v1/completions, whole or as a stream chunk (same shape)."""

    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class _Response(BaseModel):
    id: str
    object: str
    created: int
    model: str


class ChatCompletionResponse(_Response):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    system_fingerprint: None = None


class CompletionResponse(_Response):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: UsageInfo
    system_fingerprint: None = None


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _only_set(self, handler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: str | None = None


class StreamChunk(_Response):
    """One ``data:`` event; ``usage`` is sent (null until the last event) only when asked for."""

    system_fingerprint: None = None
    choices: list[ChatChunkChoice] | list[CompletionChoice]
    usage: UsageInfo | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ezrunner"
    capability: str | None = None
    max_model_len: int | None = None
    device: str | None = None
    dtype: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
