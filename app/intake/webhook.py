"""POST /webhook/chatwoot/<company>, the view: verify, parse, filter, then ``handle``
(``app.intake.accept``) or, while Redis is unreachable, the local spool; answer."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import redis
from flask import Blueprint, current_app, g, jsonify, request

from app.chatwoot.body import decode_body
from app.chatwoot.context import read_context
from app.chatwoot.messages import Ignored, InvalidPayload, MessageUpdate, StoredMessage
from app.chatwoot.payload import parse_webhook
from app.chatwoot.signature import AuthError, authenticate
from app.conversation.events import track_pause_labels
from app.intake.accept import Parsed, handle
from app.intake.backlog import Spooling as Gateway
from app.intake.backlog import start_moving, to_entry
from app.logs import Sampled
from app.metrics import SPOOLED, WEBHOOK_LATENCY, WEBHOOK_RESPONSES, WEBHOOKS_REFUSED, Stat
from app.settings import CompanyConfig
from app.store import keys

__all__ = ["UNAUTHORIZED", "bp"]

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)
# Refused webhooks are logged at most once a minute per kind: anyone can send them.
_refusals = Sampled(log)
UNAUTHORIZED = (
    "not authenticated: signature or token missing, wrong or expired (the gateway's log says which)"
)


@bp.before_request
def _start_clock() -> None:
    g.webhook_started = time.perf_counter()


@bp.after_request
def _measure(response):  # type: ignore[no-untyped-def]
    WEBHOOK_RESPONSES.labels(str(response.status_code)).inc()
    WEBHOOK_LATENCY.observe(time.perf_counter() - g.webhook_started)
    return response


def _answer(http_status: int, **body: object):  # type: ignore[no-untyped-def]
    return jsonify(body), http_status


def _ignored(gateway: Gateway, company: str, reason: str):  # type: ignore[no-untyped-def]
    try:
        gateway.redis.hincrby(keys.stats(company), Stat.WEBHOOKS_IGNORED, 1)
    except redis.RedisError:
        pass  # counting is best effort; the answer does not depend on it
    return _answer(200, status="ignored", reason=reason)


@bp.post("/webhook/chatwoot/<company>")
def chatwoot(company: str):  # type: ignore[no-untyped-def]
    gateway: Gateway = current_app.extensions["gateway"]
    config = gateway.settings.company(company)
    if config is None:
        # Answered exactly like a bad credential (DESIGN §2): which companies exist is not
        # for whoever is knocking (review 2026-12-03, finding 9); the log and /metrics say it.
        WEBHOOKS_REFUSED.labels("unknown_company").inc()
        _refusals.log(logging.INFO, "unknown_company", "webhook refused: unknown company %r", company[:64])
        return _answer(401, error="unauthorized", reason=UNAUTHORIZED)
    body = request.get_data(cache=True)
    now = gateway.clock()
    try:
        authenticate(config, request.headers, body, request.args.get("token"), now)
    except AuthError as exc:
        # The same answer for every failure: which mode the company uses and what was
        # wrong are for the operator (the log, /metrics), not for whoever is knocking.
        WEBHOOKS_REFUSED.labels(exc.kind).inc()
        _refusals.log(logging.WARNING, exc.kind, "webhook refused company=%s reason=%s", company, exc)
        return _answer(401, error="unauthorized", reason=UNAUTHORIZED)
    if not request.is_json:
        return _answer(415, error="unsupported_media_type", reason="Content-Type must be application/json")
    try:
        data = decode_body(body)
        parsed = _with_context(config, parse_webhook(data, now), data)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, InvalidPayload) else "body is not valid JSON"
        return _answer(400, error="bad_request", reason=reason)
    if isinstance(parsed, Ignored) and parsed.conversation_id is None:
        return _ignored(gateway, company, parsed.reason)  # not about a conversation
    if not config.serves_inbox(parsed.inbox_id):
        return _ignored(gateway, company, f"inbox {parsed.inbox_id} is not one of this company's INBOX_IDS")
    if isinstance(parsed, StoredMessage):
        never = config.ignored_sender(parsed.contact, parsed.group)
        if never:
            return _ignored(gateway, company, never)
        # Decided here, before any spooling (a spooled message forgets its labels).
        label = config.pausing_label(parsed.labels)
        if label:
            try:
                track_pause_labels(gateway.redis, config, parsed.conversation_id, parsed.labels)
            except redis.RedisError:
                pass  # the next webhook of the conversation sets it
            reason = f"conversation carries the label {label!r} (PAUSE_LABELS): the bot is paused"
            parsed = Ignored(
                reason, parsed.conversation_id, parsed.conversation_status, parsed.inbox_id, parsed.assignee
            )
    delivery = request.headers.get("X-Chatwoot-Delivery", "").strip()[:128] or None
    if gateway.spool.backlog():  # this process's spooled events go into Redis first: keep them in order
        return _spooled(gateway, config, parsed, delivery)
    try:
        status, answer = handle(gateway, config, parsed, delivery)
    except redis.RedisError as exc:
        log.error(
            "Redis unreachable company=%s conversation=%s error=%s: spooling",
            company,
            parsed.conversation_id,
            type(exc).__name__,
        )
        return _spooled(gateway, config, parsed, delivery)
    return _answer(status, **answer)


def _with_context(config: CompanyConfig, parsed: Parsed, data: Any) -> Parsed:
    """A message (or its update) with what its inbox's BOT_CONTEXT selects of the
    conversation; nothing is read when it selects nothing."""
    message = parsed.message if isinstance(parsed, MessageUpdate) else parsed
    if not isinstance(message, StoredMessage):
        return parsed
    parts = config.for_inbox(message.inbox_id).bot_context
    if not parts:
        return parsed
    message = dataclasses.replace(message, context=read_context(data, parts))
    return dataclasses.replace(parsed, message=message) if isinstance(parsed, MessageUpdate) else message


def _spooled(gateway: Gateway, config: CompanyConfig, parsed: Parsed, delivery: str | None):  # type: ignore[no-untyped-def]
    """Keep the event in the local spool (Redis is unreachable): 202, or 500 when even
    the spool cannot take it."""
    try:
        gateway.spool.append(to_entry(config.company_id, parsed, delivery))
    except OSError as exc:
        log.error("webhook not stored company=%s: Redis unreachable and %s", config.company_id, exc)
        reason = f"Redis unreachable and the local spool cannot take it ({exc}): not stored, retry"
        return _answer(500, error="unavailable", reason=reason)
    SPOOLED.inc()
    start_moving(gateway)
    if isinstance(parsed, StoredMessage):
        return _answer(
            202, status="queued", spooled=True, reason="Redis unreachable: kept in the local spool, in order"
        )
    return _answer(200, status="ignored", spooled=True, reason="Redis unreachable: applied once it is back")
