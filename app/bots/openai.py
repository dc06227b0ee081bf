"""The ``openai`` backend: any OpenAI-compatible chat completions server, with the
conversation's earlier turns kept in Redis (``HISTORY_TURNS``) and attachments
described in text (or, for images, given as image parts).

With OPENAI_FALLBACK_BASE_URL a second endpoint (and model) is asked when the first
times out or answers 429 or 5xx — within the same BOT_TIMEOUT_SECONDS: the first gets
``PRIMARY_SHARE`` of it and no retries, the fallback what is left. A 4xx other than
429 is the request's own fault and is not asked again. The fallback is given its own
OPENAI_FALLBACK_API_KEY, or the first's key only when it is the same origin: a key
never goes to another host. Which model answered is logged and counted
(``gateway_bot_answers_total{model}``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, NamedTuple
from urllib.parse import urlparse

import redis
import requests

from app.bots.answer import BotReply
from app.errors import BotError
from app.logs import Sampled
from app.outbound import new_session, post_json
from app.settings import CompanyConfig
from app.store import keys
from app.store.client import redis_now
from app.store.scripts import Scripts

__all__ = ["HANDOFF_MARKER", "HISTORY_TURNS", "Endpoint", "OpenAIBot", "endpoints"]

log = logging.getLogger(__name__)
_unpriced = Sampled(log)  # a model without a price: said once a minute, not at every call
HISTORY_TURNS = 20
HANDOFF_MARKER = "[handoff]"  # in a model's answer: it asks for a human
PRIMARY_SHARE = 2 / 3  # of BOT_TIMEOUT_SECONDS, for the first endpoint when a fallback exists


class Endpoint(NamedTuple):
    base_url: str
    model: str
    api_key: str | None


def endpoints(config: CompanyConfig) -> list[Endpoint]:
    """The endpoints to ask, in order: OPENAI_*, then OPENAI_FALLBACK_* if set."""
    first = Endpoint(config.openai_base_url or "", config.openai_model or "", config.openai_api_key)
    if not config.openai_fallback_base_url:
        return [first]
    url = config.openai_fallback_base_url
    same_origin = urlparse(url)[:2] == urlparse(first.base_url)[:2]
    key = config.openai_fallback_api_key or (first.api_key if same_origin else None)
    return [first, Endpoint(url, config.openai_fallback_model or first.model, key)]


def _worth_the_fallback(exc: BotError) -> bool:
    """A timeout, a connection lost, 429 or 5xx: another endpoint may answer."""
    return exc.status is None or exc.status == 429 or exc.status >= 500


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


def _pairs(values: dict[str, Any]) -> str:
    return "; ".join(f"{name}={value}" for name, value in values.items()) or "none"


def context_lines(request: dict[str, Any]) -> list[str]:
    """What BOT_CONTEXT put in the request, as lines for the system prompt."""
    context = request.get("context") or {}
    lines = []
    if "labels" in context:
        lines.append(f"labels: {', '.join(context['labels']) or 'none'}")
    if "conversation_attributes" in context:
        lines.append(f"conversation attributes: {_pairs(context['conversation_attributes'])}")
    if "contact_attributes" in context:
        lines.append(f"contact attributes: {_pairs(context['contact_attributes'])}")
    if "referral" in context:
        lines.append(f"the contact came from an ad: {_pairs(context['referral'])}")
    if "inbox" in context:
        inbox = context["inbox"]
        lines.append(f"inbox: {inbox.get('name')} ({inbox.get('channel')})")
    if "assignee" in context:
        assignee = context["assignee"] or {}
        lines.append(f"assigned to: {assignee.get('name', 'nobody')}")
    if "team" in context:
        lines.append(f"team: {(context['team'] or {}).get('name', 'none')}")
    for message in request["messages"]:
        quote = message.get("in_reply_to")
        if quote:
            said = json.dumps(quote["content"], ensure_ascii=False) if quote.get("content") else "(not known)"
            lines.append(f"the contact's message {message['id']} quotes message {quote.get('id')}: {said}")
    return lines


def _system(prompt: str, request: dict[str, Any]) -> str:
    lines = context_lines(request)
    if not lines:
        return prompt
    listed = "\n".join(f"- {line}" for line in lines)
    return f"{prompt}\n\nAbout this conversation (from Chatwoot):\n{listed}"


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
        system = {"role": "system", "content": _system(config.bot_system_prompt, request)}
        messages = [system, *turns, user_turn]
        asked = endpoints(config)
        end = time.monotonic() + config.bot_timeout_seconds
        for index, endpoint in enumerate(asked):
            last = index == len(asked) - 1
            left = end - time.monotonic()
            try:
                response = self._ask(endpoint, messages, left if last else left * PRIMARY_SHARE, last)
                break
            except BotError as exc:
                if last or not _worth_the_fallback(exc):
                    raise
                log.warning(
                    "model %s did not answer (%s): asking the fallback %s company=%s",
                    endpoint.model,
                    exc,
                    asked[index + 1].model,
                    config.company_id,
                )
        content = _completion_text(response)
        self._count_usage(response, endpoint.model)
        if len(asked) > 1:
            self._redis.hincrby(keys.bot_models(config.company_id), endpoint.model, 1)
            log.info("bot answered company=%s model=%s", config.company_id, endpoint.model)
        handoff = HANDOFF_MARKER in content
        content = content.replace(HANDOFF_MARKER, "").strip()
        return BotReply((content,) if content else (), handoff)

    def _count_usage(self, response: requests.Response, model: str) -> None:
        """The call's ``usage`` (tokens in and out) added to the company's totals and, priced
        by BOT_PRICES, to its spend: in all and today's (by Redis's clock, the money
        ceiling's count). An answer without a readable ``usage`` counts nothing."""
        usage = _usage(response)
        if usage is None:
            return
        cid, price = self._config.company_id, self._config.price_of(model)
        totals = keys.bot_usage(cid)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(totals, f"{model}:input", usage[0])
        pipe.hincrby(totals, f"{model}:output", usage[1])
        if price is not None:
            cost = price.cost(*usage)
            today = keys.bot_spend_day(cid, time.strftime("%Y-%m-%d", time.gmtime(redis_now(self._redis))))
            pipe.hincrbyfloat(totals, f"{model}:cost", cost)
            pipe.incrbyfloat(today, cost)
            pipe.expire(today, 2 * 24 * 3600)
        elif self._config.bot_prices or self._config.bot_spend_per_day:
            _unpriced.log(
                logging.WARNING, model, "no BOT_PRICES entry for model %r: its calls cost nothing here", model
            )
        pipe.execute()

    def _ask(
        self, endpoint: Endpoint, messages: list[dict[str, Any]], seconds: float, retry: bool
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        return post_json(
            self._session,
            f"{endpoint.base_url}/chat/completions",
            {"model": endpoint.model, "messages": messages},
            error=BotError,
            timeout=seconds,
            retries=self._retries if retry else 0,
            headers=headers,
            idempotent=True,
            deadline=seconds,
        )

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


MAX_TOKENS_A_CALL = 100_000_000


def _usage(response: requests.Response) -> tuple[int, int] | None:
    """(prompt tokens, completion tokens) of a chat completion answer, when it says."""
    try:
        usage = response.json()["usage"]
        found = (usage["prompt_tokens"], usage["completion_tokens"])
    except (ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < MAX_TOKENS_A_CALL for n in found):
        return None
    return found


def _completion_text(response: requests.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BotError("chat completion answer has no choices[0].message.content") from None
    if not isinstance(content, str) or not content.strip():
        raise BotError("chat completion answered an empty message")
    return content
