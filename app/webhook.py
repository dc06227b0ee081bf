"""POST /webhook/chatwoot/<company>: verify, parse, filter, enqueue, answer."""

from __future__ import annotations

import json
import logging
import time

import redis
from flask import Blueprint, current_app, g, jsonify, request

from app import keys
from app.intake import accept
from app.metrics import WEBHOOK_LATENCY, WEBHOOK_RESPONSES
from app.payload import AgentReply, Ignored, InvalidPayload, StatusChange, parse_webhook
from app.sessions import content_digest, is_reset_keyword, reset_session
from app.signature import AuthError, authenticate

__all__ = ["bp"]

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)


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


def _ignored(gateway, company: str, reason: str):  # type: ignore[no-untyped-def]
    try:
        gateway.redis.hincrby(keys.stats(company), "webhooks_ignored", 1)
    except redis.RedisError:
        pass  # counting is best effort; the answer does not depend on it
    return _answer(200, status="ignored", reason=reason)


def _conversation_event(gateway, config, parsed) -> str | None:  # type: ignore[no-untyped-def]
    """Handle what changes the bot's state rather than reaching it; the reason, or None."""
    cid = config.company_id
    if isinstance(parsed, StatusChange):
        if parsed.status in ("pending", "resolved"):
            # pending: Chatwoot gives the conversation back to the bot; resolved: a
            # reopened conversation starts afresh.
            gateway.redis.delete(keys.handoff(cid, parsed.conversation_id))
        return f"conversation status is now {parsed.status[:32]}"
    if isinstance(parsed, AgentReply):
        who = gateway.scripts.agent_reply(
            keys=[
                keys.own_reply(cid, parsed.message_id),
                keys.own_pending(cid, parsed.conversation_id),
                keys.handoff(cid, parsed.conversation_id),
                keys.stats(cid),
            ],
            args=[content_digest(parsed.content), config.handoff_ttl_seconds],
            client=gateway.redis,
        )
        if who == "own":
            return "the gateway's own reply"
        log.info("agent took over company=%s conversation=%s", cid, parsed.conversation_id)
        return "a human agent replied: the bot is silent in this conversation"
    if config.bot_only_pending and parsed.conversation_status != "pending":
        return f"conversation is {parsed.conversation_status}: the bot answers pending conversations only"
    if parsed.is_text_only and is_reset_keyword(config, parsed.content):
        reset_session(gateway.redis, gateway.scripts, cid, parsed.conversation_id)
        return "session reset"
    return None


@bp.post("/webhook/chatwoot/<company>")
def chatwoot(company: str):  # type: ignore[no-untyped-def]
    gateway = current_app.extensions["gateway"]
    config = gateway.settings.company(company)
    if config is None:
        return _answer(404, error="not_found", reason=f"unknown company {company[:64]!r}")
    if not request.is_json:
        return _answer(415, error="unsupported_media_type", reason="Content-Type must be application/json")
    body = request.get_data(cache=True)
    now = gateway.clock()
    try:
        authenticate(config, request.headers, body, request.args.get("token"), now)
    except AuthError as exc:
        log.info("webhook refused company=%s reason=%s", company, exc)
        return _answer(401, error="unauthorized", reason=str(exc))
    try:
        parsed = parse_webhook(json.loads(body), now)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, InvalidPayload) else "body is not valid JSON"
        return _answer(400, error="bad_request", reason=reason)
    if isinstance(parsed, Ignored):
        return _ignored(gateway, company, parsed.reason)
    try:
        early = _conversation_event(gateway, config, parsed)
    except redis.RedisError:
        return _answer(500, error="unavailable", reason="Redis unreachable, retry")
    if early is not None:
        return _ignored(gateway, company, early)
    delivery = request.headers.get("X-Chatwoot-Delivery", "").strip()[:128] or None
    try:
        accepted = accept(
            gateway.redis, gateway.scripts, gateway.celery, gateway.settings, config, parsed, delivery
        )
    except redis.RedisError as exc:
        log.error(
            "message not stored company=%s conversation=%s error=%s",
            company,
            parsed.conversation_id,
            type(exc).__name__,
        )
        return _answer(500, error="unavailable", reason="Redis unreachable: message not stored, retry")
    result = accepted.result
    if result.status == "duplicate":
        return _answer(200, status="ignored", reason="duplicate delivery or message")
    if result.status == "handoff":
        return _answer(200, status="ignored", reason="conversation handed to a human")
    if result.status == "full":
        return _answer(
            429,
            error="too_many_requests",
            reason=f"conversation {parsed.conversation_id} already holds {result.length} messages",
        )
    log.info(
        "message queued company=%s conversation=%s message=%s position=%d scheduled=%s",
        company,
        parsed.conversation_id,
        parsed.id,
        result.length,
        accepted.scheduled,
    )
    return _answer(
        202,
        status="queued",
        queue_position=result.length,
        task_id=accepted.task_id,
        batching={
            "mode": config.batch_window_mode,
            "window_seconds": config.batch_window_seconds,
            "max_wait_seconds": config.batch_max_wait_seconds,
            "new_batch": accepted.scheduled,
        },
    )
