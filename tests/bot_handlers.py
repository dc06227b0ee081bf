"""Handlers for the python bot backend in tests (BOT_HANDLER=tests.bot_handlers:...)."""

import threading
from typing import Any


def shout(request: dict[str, Any]) -> dict[str, Any]:
    return {"replies": [request["text"].upper(), f"({len(request['messages'])} fragments)"]}


def broken(request: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("handler bug")


def hangs_on_request(request: dict[str, Any]) -> dict[str, Any]:
    """Never returns when asked to 'hang' (a handler stuck on a lock, a socket without timeout)."""
    if "hang" in request["text"]:
        threading.Event().wait()
    return {"reply": request["text"]}
