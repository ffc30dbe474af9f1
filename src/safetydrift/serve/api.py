"""The OpenAI chat-completions request: validation into (conversation, settings), and error answers."""

from __future__ import annotations

import json
import math
from typing import Any

from safetydrift.errors import SafetyDriftError
from safetydrift.types import Conversation, GenerationConfig

MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 8192
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class APIError(Exception):
    """An error answer: HTTP status plus an OpenAI-style error object."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(f"'{key}' must be a number", key)
    if v < lo or v > hi or (lo_open and v == lo):
        raise _bad(f"'{key}' must be in {'(' if lo_open else '['}{lo:g}, {hi:g}]", key)
    return float(v)


def _int(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"'{key}' must be an integer", key)
    return v


def _content(i: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text is supported
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            texts.append(part["text"])
        return "\n".join(texts)
    raise _bad(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")


def parse_chat_request(raw: bytes) -> tuple[Conversation, GenerationConfig]:
    """Validate a /v1/chat/completions body into (conversation, generation settings); APIError(400) if bad."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: [[[[… nested too deep
        raise _bad(f"request body is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    if "model" in body and not isinstance(body["model"], str):
        raise _bad("'model' must be a string", "model")
    if body.get("stream"):
        raise _bad("streaming is not supported by this server", "stream")
    n = _int(body, "n")
    if n is not None and n != 1:
        raise _bad("only n=1 is supported", "n")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' must be a non-empty list", "messages")
    conv: Conversation = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}] must be an object", f"messages[{i}]")
        role = m.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise _bad(f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}", f"messages[{i}].role")
        conv.append({"role": _ROLES[role], "content": _content(i, m.get("content"))})
    max_tokens = _int(body, "max_tokens")
    if max_tokens is None:
        max_tokens = _int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise _bad(f"'max_tokens' must be between 1 and {MAX_TOKENS_LIMIT}", "max_tokens")
    seed = _int(body, "seed")
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise _bad("'seed' must be a 64-bit integer", "seed")
    try:
        config = GenerationConfig(
            max_new_tokens=max_tokens,
            temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
            seed=0 if seed is None else seed,
            system_prompt=None,  # system turns travel inside messages
        )
    except SafetyDriftError as e:  # GenerationConfig's own rules: still the client's request, so 400
        raise _bad(str(e)) from None
    return conv, config
