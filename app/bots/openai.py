"""The ``openai`` backend: any OpenAI-compatible chat completions server, with the
conversation's earlier turns kept in Redis (``HISTORY_TURNS``) and attachments
described in text (or, for images, given as image parts)."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
import requests

from app.bots.answer import BotReply
from app.errors import BotError
from app.outbound import new_session, post_json
from app.settings import CompanyConfig
from app.store import keys
from app.store.scripts import Scripts

__all__ = ["HANDOFF_MARKER", "HISTORY_TURNS", "OpenAIBot"]

log = logging.getLogger(__name__)
HISTORY_TURNS = 20
HANDOFF_MARKER = "[handoff]"  # in a model's answer: it asks for a human


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
