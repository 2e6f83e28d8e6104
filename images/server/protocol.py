"""Validation of OpenAI request bodies (plain dicts, checked field by field).

Every problem becomes an :class:`APIError` 400 naming the offending field, so
the client sees ``{"error": {"message", "type", "param", "code"}}`` and never a
traceback. Unknown fields are ignored, as the OpenAI API does for most clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import APIError, bad_request

MAX_STOP_SEQUENCES = 4


@dataclass
class SamplingParams:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _opt_number(body: dict, name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if not _is_number(v):
        raise bad_request(f"'{name}' must be a number, got {type(v).__name__}", name, "invalid_type")
    if not (lo <= float(v) <= hi):
        raise bad_request(f"'{name}' must be between {lo:g} and {hi:g}, got {v}", name)
    return float(v)


def _opt_int(body: dict, name: str, lo: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not _is_int(v):
        raise bad_request(f"'{name}' must be an integer, got {type(v).__name__}", name, "invalid_type")
    if v < lo:
        raise bad_request(f"'{name}' must be at least {lo}, got {v}", name)
    return int(v)


def _opt_bool(body: dict, name: str) -> bool | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise bad_request(f"'{name}' must be a boolean, got {type(v).__name__}", name, "invalid_type")
    return v


def check_model(body: dict, served_name: str) -> None:
    model = body.get("model")
    if model is None:
        return  # the OpenAI client always sends it; curl users may omit it
    if not isinstance(model, str):
        raise bad_request(f"'model' must be a string, got {type(model).__name__}", "model", "invalid_type")
    if model != served_name:
        raise APIError(
            404,
            f"The model '{model}' does not exist. This server serves '{served_name}'.",
            param="model",
            code="model_not_found",
        )


def parse_sampling(body: dict, *, chat: bool) -> SamplingParams:
    p = SamplingParams()
    # n: only 1
    n = body.get("n")
    if n is not None:
        if not _is_int(n):
            raise bad_request(f"'n' must be an integer, got {type(n).__name__}", "n", "invalid_type")
        if n != 1:
            raise bad_request(f"only n=1 is supported, got n={n}", "n", "unsupported_value")
    max_tokens = _opt_int(body, "max_tokens", 1)
    if chat:
        mct = _opt_int(body, "max_completion_tokens", 1)
        if mct is not None:
            max_tokens = mct
    p.max_tokens = max_tokens
    p.temperature = _opt_number(body, "temperature", 0.0, 2.0)
    p.top_p = _opt_number(body, "top_p", 0.0, 1.0)
    if p.top_p is not None and p.top_p == 0.0:
        raise bad_request("'top_p' must be greater than 0", "top_p")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad_request(f"'seed' must be an integer, got {type(seed).__name__}", "seed", "invalid_type")
    p.seed = seed
    p.presence_penalty = _opt_number(body, "presence_penalty", -2.0, 2.0) or 0.0
    p.frequency_penalty = _opt_number(body, "frequency_penalty", -2.0, 2.0) or 0.0
    if body.get("logprobs") not in (None, False, 0):
        raise bad_request("'logprobs' is not supported by this server", "logprobs", "unsupported_parameter")
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stops = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            stops = list(stop)
        else:
            raise bad_request("'stop' must be a string or a list of strings", "stop", "invalid_type")
        if len(stops) > MAX_STOP_SEQUENCES:
            raise bad_request(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences, got {len(stops)}", "stop")
        p.stop = [s for s in stops if s]
    p.ignore_eos = bool(_opt_bool(body, "ignore_eos") or False)
    p.stream = bool(_opt_bool(body, "stream") or False)
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise bad_request("'stream_options' must be an object", "stream_options", "invalid_type")
        iu = so.get("include_usage")
        if iu is not None and not isinstance(iu, bool):
            raise bad_request(
                "'stream_options.include_usage' must be a boolean", "stream_options.include_usage", "invalid_type"
            )
        p.include_usage = bool(iu)
    return p


def parse_messages(body: dict) -> list[dict[str, str]]:
    if "messages" not in body:
        raise bad_request("'messages' is a required property", "messages", "missing_required_parameter")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise bad_request(f"'messages' must be an array, got {type(messages).__name__}", "messages", "invalid_type")
    if not messages:
        raise bad_request("'messages' must contain at least one message", "messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"'{where}' must be an object", where, "invalid_type")
        role = m.get("role")
        if not isinstance(role, str) or role not in ("system", "developer", "user", "assistant", "tool"):
            raise bad_request(
                f"'{where}.role' must be one of system, developer, user, assistant, tool", f"{where}.role"
            )
        content = m.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad_request(
                        f"'{where}.content[{j}]' must be a text part; this server serves a text-only model",
                        f"{where}.content",
                        "unsupported_content",
                    )
                parts.append(part["text"])
            text = "".join(parts)
        else:
            raise bad_request(f"'{where}.content' must be a string or an array of parts", f"{where}.content", "invalid_type")
        out.append({"role": "system" if role == "developer" else role, "content": text})
    return out


def parse_prompt(body: dict) -> str:
    if "prompt" not in body:
        raise bad_request("'prompt' is a required property", "prompt", "missing_required_parameter")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad_request(
            "'prompt' must be a string (a single prompt per request)", "prompt", "invalid_type"
        )
    if body.get("echo"):
        raise bad_request("'echo' is not supported by this server", "echo", "unsupported_parameter")
    if body.get("suffix"):
        raise bad_request("'suffix' is not supported by this server", "suffix", "unsupported_parameter")
    return prompt


def parse_embedding_input(body: dict) -> list[str]:
    if "input" not in body:
        raise bad_request("'input' is a required property", "input", "missing_required_parameter")
    inp = body["input"]
    if isinstance(inp, str):
        items = [inp]
    elif isinstance(inp, list) and inp and all(isinstance(s, str) for s in inp):
        items = list(inp)
    elif isinstance(inp, list) and not inp:
        raise bad_request("'input' must not be empty", "input")
    else:
        raise bad_request("'input' must be a string or a list of strings", "input", "invalid_type")
    if len(items) > 2048:
        raise bad_request(f"'input' takes at most 2048 items, got {len(items)}", "input")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None:
        raise bad_request("'dimensions' is not supported by this model", "dimensions", "unsupported_parameter")
    return items
