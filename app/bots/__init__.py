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

import importlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import redis
import requests

from app.batching.rules import Segment
from app.chatwoot.payload import Attachment
from app.errors import BotError
from app.outbound import new_session, post_json
from app.settings import CompanyConfig, ConfigError
from app.store import keys
from app.store.scripts import Scripts

__all__ = ["Bot", "BotReply", "KeepsTurns", "ask_bot", "bot_request", "make_bot", "parse_bot_answer"]

log = logging.getLogger(__name__)
HANDOFF_MARKER = "[handoff]"
HISTORY_TURNS = 20
DEADLINE_GRACE_SECONDS = 0.5  # the http/openai backends report their own timeout first


@dataclass(frozen=True)
class BotReply:
    replies: tuple[str, ...]
    handoff: bool = False
    team: int | None = None  # with a handoff: the Chatwoot team to assign
    note: str = ""  # with a handoff: a private note for the humans (a summary)


class Bot(Protocol):
    def answer(self, request: dict[str, Any]) -> BotReply: ...


@runtime_checkable
class KeepsTurns(Protocol):
    """A bot that keeps the conversation's turns (openai): it is told what the contact
    received, once it was posted, never what it merely answered (an answer superseded
    by newer fragments, or lost with its run, never reached the contact)."""

    def remember(self, conversation: str, answer_id: str, user_text: str, reply: str) -> None: ...


def ask_bot(bot: Bot, request: dict[str, Any], timeout: float) -> BotReply:
    """The bot's answer within ``timeout`` seconds, or ``BotError``."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def call() -> None:
        try:
            outcome["reply"] = bot.answer(request)
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=call, daemon=True, name="bot-call").start()
    if not done.wait(timeout + DEADLINE_GRACE_SECONDS):
        log.error(
            "bot call abandoned conversation=%s: no answer within BOT_TIMEOUT_SECONDS=%s",
            request.get("conversation_id"),
            timeout,
        )
        raise BotError(f"bot did not answer within BOT_TIMEOUT_SECONDS={timeout:g}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["reply"]


def bot_request(company: str, segment: Segment) -> dict[str, Any]:
    """The JSON the bot receives for one segment (DESIGN.md §2)."""
    first = segment.messages[0]
    return {
        "company": company,
        "account_id": first.account_id,
        "conversation_id": first.conversation_id,
        "inbox_id": first.inbox_id,
        "contact": first.contact,
        "messages": [
            {
                "id": m.id,
                "content": m.content,
                "attachments": [a.as_dict() for a in m.attachments],
                "created_at": m.created_at,
            }
            for m in segment.messages
        ],
        "text": segment.text,
        "batched": segment.batched,
    }


def parse_bot_answer(answer: Any) -> BotReply:
    """Validate an http/python bot answer; raise ``BotError`` naming the problem."""
    if not isinstance(answer, dict):
        raise BotError(f"bot answer must be a JSON object, got {type(answer).__name__}")
    handoff = answer.get("handoff", False)
    if not isinstance(handoff, bool):
        raise BotError("bot answer 'handoff' must be true or false")
    if "replies" in answer:
        replies = answer["replies"]
        if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
            raise BotError("bot answer 'replies' must be a list of strings")
    elif "reply" in answer:
        if not isinstance(answer["reply"], str):
            raise BotError("bot answer 'reply' must be a string")
        replies = [answer["reply"]]
    elif handoff:
        replies = []
    else:
        raise BotError("bot answer has neither 'reply' nor 'replies'")
    cleaned = tuple(r for r in replies if r.strip())
    if not cleaned and replies and not handoff:
        raise BotError("bot answered an empty reply")
    team = answer.get("team")
    if team is not None and (isinstance(team, bool) or not isinstance(team, int) or team <= 0):
        raise BotError("bot answer 'team' must be a positive team id")
    note = answer.get("note", "")
    if not isinstance(note, str):
        raise BotError("bot answer 'note' must be a string")
    return BotReply(cleaned, handoff, team, note.strip())


class EchoBot:
    """Replies with the text it received: shows batching end to end."""

    def answer(self, request: dict[str, Any]) -> BotReply:
        text = request["text"]
        if not text:
            text = "received: " + ", ".join(_described(request))
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


def _described(request: dict[str, Any]) -> list[str]:
    """What the request's attachments carry, as text (a location's title and coordinates,
    a contact card's name and number, a voice note's transcript), in message order."""
    return [Attachment(**a).describe() for m in request["messages"] for a in m["attachments"]]


def _user_text(request: dict[str, Any]) -> str:
    """The request as one text a language model reads: ``text`` already holds the
    contact's words and what the attachments carry, in order (images go as image
    parts)."""
    return str(request["text"])


def _user_content(request: dict[str, Any]) -> str | list[dict[str, Any]]:
    images = [
        a["data_url"]
        for m in request["messages"]
        for a in m["attachments"]
        if a.get("file_type") == "image" and a.get("data_url")
    ]
    text = _user_text(request)
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text or "(image)"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return parts


class OpenAIBot:
    """Chat completions with the conversation's recent turns kept in Redis.

    The turns kept are what the contact received: the drain calls ``remember``
    once an answer is posted (``KeepsTurns``), so an answer the drain throws away
    (newer fragments arrived) is never in the model's context. The model hands
    the conversation to humans by including ``[handoff]`` in its answer (say so in
    ``BOT_SYSTEM_PROMPT``); the marker is removed.
    """

    def __init__(
        self,
        config: CompanyConfig,
        client: redis.Redis,
        retries: int,
        session: requests.Session | None = None,
    ) -> None:
        self._config = config
        self._redis = client
        self._scripts = Scripts(client)
        self._retries = retries
        self._session = session or new_session()

    def answer(self, request: dict[str, Any]) -> BotReply:
        config = self._config
        history_key = keys.bot_history(config.company_id, request["conversation_id"])
        turns = [_turn(t) for t in self._redis.lrange(history_key, -HISTORY_TURNS, -1)]
        user_turn = {"role": "user", "content": _user_content(request)}
        messages = [{"role": "system", "content": config.bot_system_prompt}, *turns, user_turn]
        headers = {"Authorization": f"Bearer {config.openai_api_key}"} if config.openai_api_key else {}
        response = post_json(
            self._session,
            f"{config.openai_base_url}/chat/completions",
            {"model": config.openai_model, "messages": messages},
            error=BotError,
            timeout=config.bot_timeout_seconds,
            retries=self._retries,
            headers=headers,
            idempotent=True,
            deadline=config.bot_timeout_seconds,
        )
        content = _completion_text(response)
        handoff = HANDOFF_MARKER in content
        content = content.replace(HANDOFF_MARKER, "").strip()
        return BotReply((content,) if content else (), handoff)

    def remember(self, conversation: str, answer_id: str, user_text: str, reply: str) -> None:
        """Keep one exchange the contact received, once (``REMEMBER_TURN``)."""
        tag = {"answer": answer_id}
        self._scripts.ledger.remember_turn(
            self._config.company_id,
            conversation,
            json.dumps(tag)[1:-1],  # '"answer": "<id>"', as it appears in the stored turns
            json.dumps({"role": "user", "content": user_text, **tag}),
            json.dumps({"role": "assistant", "content": reply, **tag}),
            HISTORY_TURNS,
            max(1, int(self._config.session_idle_minutes * 60)),
        ).run()


def _turn(raw: str) -> dict[str, Any]:
    """A kept turn as the model is given it (without the gateway's tag)."""
    turn = json.loads(raw)
    return {"role": turn["role"], "content": turn["content"]}


def _completion_text(response: requests.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BotError("chat completion answer has no choices[0].message.content") from None
    if not isinstance(content, str) or not content.strip():
        raise BotError("chat completion answered an empty message")
    return content


def load_handler(spec: str) -> Callable[[dict[str, Any]], Any]:
    module_name, _, attribute = spec.partition(":")
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"BOT_HANDLER {spec!r} cannot be imported: {exc}") from None
    if not callable(handler):
        raise ConfigError(f"BOT_HANDLER {spec!r} is not callable")
    return handler


def make_bot(config: CompanyConfig, client: redis.Redis, retries: int) -> Bot:
    if config.bot_backend == "http":
        return HttpBot(config, retries)
    if config.bot_backend == "openai":
        return OpenAIBot(config, client, retries)
    if config.bot_backend == "python":
        assert config.bot_handler
        return PythonBot(load_handler(config.bot_handler))
    return EchoBot()
