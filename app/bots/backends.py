"""The simple backends: ``echo`` (the text it received), ``http`` (a POST of the bot
request to BOT_URL), ``python`` (a function named by BOT_HANDLER, ``module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import requests

from app.bots.answer import BotReply, described, parse_bot_answer
from app.errors import BotError
from app.outbound import new_session, post_json
from app.settings import CompanyConfig, ConfigError

__all__ = ["EchoBot", "HttpBot", "PythonBot", "load_handler"]


class EchoBot:
    """Replies with the text it received: shows batching end to end."""

    def answer(self, request: dict[str, Any]) -> BotReply:
        text = request["text"]
        if not text:
            text = "received: " + ", ".join(described(request))
        return BotReply((text,))


class HttpBot:
    def __init__(self, config: CompanyConfig, retries: int, session: requests.Session | None = None) -> None:
        assert config.bot_url
        self._url = config.bot_url
        self._timeout = config.bot_timeout_seconds
        self._retries = retries
        self._session = session or new_session()

    def answer(self, request: dict[str, Any]) -> BotReply:
        response = post_json(
            self._session,
            self._url,
            request,
            error=BotError,
            timeout=self._timeout,
            retries=self._retries,
            idempotent=True,
            deadline=self._timeout,
        )
        try:
            answer = response.json()
        except ValueError:
            raise BotError("bot answer is not valid JSON") from None
        return parse_bot_answer(answer)


class PythonBot:
    def __init__(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        self._handler = handler

    def answer(self, request: dict[str, Any]) -> BotReply:
        try:
            answer = self._handler(request)
        except Exception as exc:  # the handler is user code: any failure is a bot failure
            raise BotError(f"BOT_HANDLER raised {type(exc).__name__}: {exc}") from exc
        return parse_bot_answer(answer)


def load_handler(spec: str) -> Callable[[dict[str, Any]], Any]:
    module_name, _, attribute = spec.partition(":")
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"BOT_HANDLER {spec!r} cannot be imported: {exc}") from None
    if not callable(handler):
        raise ConfigError(f"BOT_HANDLER {spec!r} is not callable")
    return handler
