"""POST /webhook/chatwoot/<company>: verify, parse, filter, enqueue, answer."""

from __future__ import annotations

import json
import logging
import time

import redis
from flask import Blueprint, current_app, jsonify, request

from app import keys
from app.intake import accept
from app.payload import Ignored, InvalidPayload, StatusChange, parse_webhook
from app.signature import AuthError, authenticate

__all__ = ["bp"]

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)


def _answer(http_status: int, **body: object):  # type: ignore[no-untyped-def]
    return jsonify(body), http_status


def _ignored(gateway, company: str, reason: str):  # type: ignore[no-untyped-def]
    try:
        gateway.redis.hincrby(keys.stats(company), "webhooks_ignored", 1)
    except redis.RedisError:
        pass  # counting is best effort; the answer does not depend on it
    return _answer(200, status="ignored", reason=reason)


@bp.post("/webhook/chatwoot/<company>")
def chatwoot(company: str):  # type: ignore[no-untyped-def]
    gateway = current_app.extensions["gateway"]
    config = gateway.settings.company(company)
    if config is None:
        return _answer(404, error="not_found", reason=f"unknown company {company[:64]!r}")
    if not request.is_json:
        return _answer(415, error="unsupported_media_type", reason="Content-Type must be application/json")
    body = request.get_data(cache=True)
    now = time.time()
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
    if isinstance(parsed, StatusChange):
        if parsed.status == "pending":
            try:
                gateway.redis.delete(keys.handoff(company, parsed.conversation_id))
            except redis.RedisError:
                return _answer(500, error="unavailable", reason="Redis unreachable, retry")
        return _ignored(gateway, company, f"conversation status is now {parsed.status[:32]}")
    if isinstance(parsed, Ignored):
        return _ignored(gateway, company, parsed.reason)
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
            "window_seconds": config.batch_window_seconds,
            "max_wait_seconds": config.batch_max_wait_seconds,
            "new_batch": accepted.scheduled,
        },
    )
