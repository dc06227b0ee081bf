"""Bot backends: echo, http, openai (any OpenAI-compatible server), python.

Every backend takes the same request (``bot_request``) and returns a
``BotReply``; the http and python backends share one answer format:
``{"replies": ["...", ...]}`` or ``{"reply": "..."}``, optional ``"handoff": true``
and, with it, ``"team": <Chatwoot team id>`` and ``"note": "<private note>"``.

``ask_bot`` bounds every backend by ``BOT_TIMEOUT_SECONDS``: the call runs in
a thread of its own and the drain stops waiting at the deadline. The http and
openai backends end their own call at the same deadline (a trickled body
included); a python handler that never returns cannot be stopped, so its
thread is abandoned (logged) and the conversation moves on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from app.batching.rules import Segment
from app.bots.answer import Bot, BotReply, KeepsTurns, parse_bot_answer
from app.bots.backends import EchoBot, HttpBot, PythonBot, load_handler
from app.bots.openai import HANDOFF_MARKER, OpenAIBot
from app.chatwoot.context import QUOTE
from app.chatwoot.messages import StoredMessage
from app.errors import BotError
from app.settings import BotBackend, CompanyConfig

__all__ = [
    "HANDOFF_MARKER",
    "REQUEST_VERSION",
    "Bot",
    "BotReply",
    "EchoBot",
    "HttpBot",
    "KeepsTurns",
    "OpenAIBot",
    "PythonBot",
    "ask_bot",
    "bot_request",
    "follow_up_request",
    "load_handler",
    "make_bot",
    "parse_bot_answer",
]

log = logging.getLogger(__name__)
DEADLINE_GRACE_SECONDS = 0.5  # the http/openai backends report their own timeout first


def ask_bot(
    bot: Bot,
    request: dict[str, Any],
    timeout: float,
    slow: tuple[float, Callable[[], None]] | None = None,
) -> BotReply:
    """The bot's answer within ``timeout`` seconds, or ``BotError``. ``slow``: (seconds,
    what to do, in this thread, once the bot has taken that long without answering)."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def call() -> None:
        try:
            outcome["reply"] = bot.answer(request)
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome["error"] = exc
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=call, daemon=True, name="bot-call").start()
    if slow is not None and slow[0] < timeout and not done.wait(slow[0]):
        slow[1]()
    if not done.wait(max(0.0, started + timeout + DEADLINE_GRACE_SECONDS - time.monotonic())):
        log.error(
            "bot call abandoned conversation=%s: no answer within BOT_TIMEOUT_SECONDS=%s",
            request.get("conversation_id"),
            timeout,
        )
        raise BotError(f"bot did not answer within BOT_TIMEOUT_SECONDS={timeout:g}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["reply"]


REQUEST_VERSION = 2  # README, "The bot contract": what each version added


def bot_request(company: str, segment: Segment, quoted: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The JSON the bot receives for one segment (DESIGN.md §2; README, "The bot
    contract"). ``quoted``: the text of quoted messages the gateway has, by Chatwoot id.
    With BOT_CONTEXT, ``context`` holds what it selects of the conversation as the
    batch's last message saw it, and a message that quotes another says which."""
    first, last = segment.messages[0], segment.messages[-1]
    request: dict[str, Any] = {
        "version": REQUEST_VERSION,
        "company": company,
        "account_id": first.account_id,
        "conversation_id": first.conversation_id,
        "inbox_id": first.inbox_id,
        "contact": first.contact,
        "messages": [_message(m, quoted or {}) for m in segment.messages],
        "text": segment.text,
        "batched": segment.batched,
    }
    if last.context is not None:
        request["context"] = {part: value for part, value in last.context.items() if part != QUOTE}
    return request


def follow_up_request(
    company: str, account: int, conversation: str, inbox: int | None, contact: dict[str, Any], follow_up: int
) -> dict[str, Any]:
    """The request of a follow-up on silence (README, "The bot contract"): the bot writes
    the ``follow_up``-th nudge of a conversation whose contact has not answered; no messages."""
    return {
        "version": REQUEST_VERSION,
        "company": company,
        "account_id": account,
        "conversation_id": conversation,
        "inbox_id": inbox,
        "contact": contact,
        "messages": [],
        "text": "",
        "batched": False,
        "follow_up": follow_up,
    }


def _message(message: StoredMessage, quoted: Mapping[int, str]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": message.id,
        "content": message.content,
        "attachments": [a.as_dict() for a in message.attachments],
        "created_at": message.created_at,
    }
    quote = (message.context or {}).get(QUOTE)
    if quote:
        item[QUOTE] = {**quote, "content": quoted.get(quote.get("id"))}
    return item


def make_bot(config: CompanyConfig, client: redis.Redis, retries: int) -> Bot:
    if config.bot_backend == BotBackend.HTTP:
        return HttpBot(config, retries)
    if config.bot_backend == BotBackend.OPENAI:
        return OpenAIBot(config, client, retries)
    if config.bot_backend == BotBackend.PYTHON:
        assert config.bot_handler
        return PythonBot(load_handler(config.bot_handler))
    return EchoBot()
