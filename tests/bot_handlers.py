"""Handlers for the python bot backend in tests (BOT_HANDLER=tests.bot_handlers:...)."""

from typing import Any


def shout(request: dict[str, Any]) -> dict[str, Any]:
    return {"replies": [request["text"].upper(), f"({len(request['messages'])} fragments)"]}


def broken(request: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("handler bug")
