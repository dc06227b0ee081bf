"""A webhook's body as JSON (``decode_body``), and the readers of the loosely typed
values Chatwoot's JSON holds (an id as a number or a string of digits, a timestamp as
ISO-8601 or epoch seconds), each raising ``InvalidPayload`` naming the field."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from app.chatwoot.messages import InvalidPayload
from app.chatwoot.replies import encodable

__all__ = ["decode_body", "integer", "mapping", "number", "optional_integer", "timestamp"]


def integer(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidPayload(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        return int(value)  # ASCII digits only: "²" is a digit to isdigit(), and int() refuses it
    raise InvalidPayload(f"{what} must be an integer, got {value!r}"[:200])


def optional_integer(value: Any) -> int | None:
    try:
        return integer(value, "") if value is not None else None
    except InvalidPayload:
        return None


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def timestamp(value: Any) -> int | None:
    """Unix seconds from Chatwoot's ISO-8601 ``created_at`` (or an integer)."""
    if isinstance(value, str) and value.strip():
        try:
            return int(datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp())
        except ValueError:
            return optional_integer(value)
    return optional_integer(value)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_body(body: bytes) -> Any:
    """The webhook's JSON, with every lone UTF-16 surrogate (a ``\\ud83d`` escape
    without its pair: an emoji cut in half) replaced by U+FFFD wherever it is, so no
    field of it can fail to encode later (a key, a status, a name, the content).
    Only a body holding a surrogate escape is walked."""
    data = json.loads(body)
    return _without_lone_surrogates(data) if _SURROGATE_ESCAPE.search(body) else data


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {encodable(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value
