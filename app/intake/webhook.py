"""POST /webhook/chatwoot/<company>: verify, parse, filter, enqueue, answer."""

from __future__ import annotations

import dataclasses
import logging
import time

import redis
from flask import Blueprint, current_app, g, jsonify, request

from app.chatwoot.payload import (
    AgentReply,
    Ignored,
    InvalidPayload,
    MessageUpdate,
    StatusChange,
    StoredMessage,
    decode_body,
    parse_webhook,
)
from app.chatwoot.signature import AuthError, authenticate
from app.conversation.own import content_digest
from app.conversation.ownership import Event, Holder
from app.conversation.sessions import is_reset_keyword, reset_session
from app.intake.accept import accept
from app.logs import Sampled
from app.metrics import SPOOLED, WEBHOOK_LATENCY, WEBHOOK_RESPONSES, WEBHOOKS_REFUSED, Stat
from app.store import keys
from app.store.scripts import Sender, Updated

__all__ = ["bp", "handle", "start_moving"]

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


def _ignored(gateway, company: str, reason: str):  # type: ignore[no-untyped-def]
    try:
        gateway.redis.hincrby(keys.stats(company), Stat.WEBHOOKS_IGNORED, 1)
    except redis.RedisError:
        pass  # counting is best effort; the answer does not depend on it
    return _answer(200, status="ignored", reason=reason)


def _status_event(gateway, config, parsed: StatusChange) -> str:  # type: ignore[no-untyped-def]
    """A conversation event: what it says of the status and assignee is observed, and may
    give the conversation back to the bot or to a human (app.conversation.ownership)."""
    cid, conversation = config.company_id, parsed.conversation_id
    before, after = gateway.scripts.ownership.observe(
        config, conversation, parsed.seen, count_ignored=True
    ).run()
    reason = f"conversation status is now {parsed.status}"
    if after is before:
        return reason
    log.info("conversation holder company=%s conversation=%s now=%r", cid, conversation, after.value)
    if after is Holder.BOT:
        return f"{reason}: the bot answers it again"
    return f"{reason}: {after.value}, the bot is silent in this conversation"


def _agent_reply(gateway, config, parsed: AgentReply) -> str:  # type: ignore[no-untyped-def]
    """A human's public reply (in Chatwoot, or from the WhatsApp phone): a takeover,
    unless it is the gateway's own reply coming back."""
    cid = config.company_id
    who = gateway.scripts.ownership.agent_reply(
        config, parsed.conversation_id, parsed.message_id, content_digest(parsed.content), parsed.seen
    ).run()
    gateway.redis.hincrby(keys.stats(cid), Stat.WEBHOOKS_IGNORED, 1)
    if who is Sender.OWN:
        return "the gateway's own reply"
    where = "from the WhatsApp phone" if parsed.via_phone else "in Chatwoot"
    log.info("agent took over company=%s conversation=%s via=%s", cid, parsed.conversation_id, where)
    return f"a human agent replied {where}: the bot is silent in this conversation"


_UPDATES = {
    Updated.REPLACED: "message updated while it waited in its batch: the bot sees it as it is now",
    Updated.REMOVED: "message deleted while it waited in its batch: the bot will not see it",
    Updated.GONE: "message updated after it was taken into a batch (or never queued): nothing changes",
}


def _message_update(gateway, config, parsed: MessageUpdate) -> str:  # type: ignore[no-untyped-def]
    """``message_updated`` (an edit, Chatwoot's transcript arriving, a deletion): applied
    to the message while it waits in its batch; never a new message, never a second turn."""
    gateway.scripts.ownership.observe(config, parsed.conversation_id, parsed.seen).run()
    updated = gateway.scripts.intake.update_queued(config.company_id, parsed).run()
    log.info(
        "message updated company=%s conversation=%s message=%s deleted=%s result=%s",
        config.company_id,
        parsed.conversation_id,
        parsed.message.id,
        parsed.deleted,
        updated.value,
    )
    return _UPDATES[updated]


def _track_pause(gateway, config, conversation: str, labels: tuple[str, ...] | None) -> str | None:  # type: ignore[no-untyped-def]
    """Keep ``<company>:webhook_paused:<conversation>`` in step with the conversation's
    labels (PAUSE_LABELS): set while it carries one, gone once a webhook shows it
    without. Returns the pausing label, if any. Labels unknown (None): nothing changes."""
    if not config.pause_labels or labels is None:
        return None
    key = keys.paused(config.company_id, conversation)
    label = config.pausing_label(labels)
    if label:
        gateway.redis.set(key, label, ex=config.status_ttl_seconds)
    else:
        gateway.redis.delete(key)
    return label


def _conversation_event(gateway, config, parsed) -> str | None:  # type: ignore[no-untyped-def]
    """Handle what changes the bot's state rather than reaching it; the reason, or None.
    Whatever a payload says of who holds its conversation is observed, the payloads
    the bot ignores included (docs/conversation.md: no single event can be relied on)."""
    if isinstance(parsed, Ignored):
        seen, turn = parsed.seen, parsed.turn
        gateway.scripts.ownership.observe(
            config, parsed.conversation_id, seen, count_ignored=True, turn=turn
        ).run()
        return parsed.reason
    if isinstance(parsed, StatusChange):
        _track_pause(gateway, config, parsed.conversation_id, parsed.labels)
        return _status_event(gateway, config, parsed)
    if isinstance(parsed, AgentReply):
        return _agent_reply(gateway, config, parsed)
    if isinstance(parsed, MessageUpdate):
        return _message_update(gateway, config, parsed)
    if config.answers_only_pending and parsed.conversation_status != "pending":
        gateway.scripts.ownership.observe(
            config, parsed.conversation_id, parsed.seen, count_ignored=True
        ).run()
        mode = "BOT_ONLY_PENDING" if config.bot_only_pending else f"{config.chatwoot_integration} mode"
        return (
            f"conversation is {parsed.conversation_status}: the bot answers pending conversations"
            f" only ({mode}); open ones belong to humans"
        )
    _track_pause(gateway, config, parsed.conversation_id, parsed.labels)  # a label gone: resume
    if parsed.is_text_only and is_reset_keyword(config, parsed.content):
        gateway.scripts.ownership.observe(
            config, parsed.conversation_id, parsed.seen, count_ignored=True
        ).run()
        reset_session(gateway.redis, gateway.scripts, config, parsed.conversation_id, Event.RESET_KEYWORD)
        return "session reset"
    return None


@bp.post("/webhook/chatwoot/<company>")
def chatwoot(company: str):  # type: ignore[no-untyped-def]
    gateway = current_app.extensions["gateway"]
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
        parsed = parse_webhook(decode_body(body), now)
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
                _track_pause(gateway, config, parsed.conversation_id, parsed.labels)
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


def handle(gateway, config, parsed, delivery: str | None, ordered: bool = False):  # type: ignore[no-untyped-def]
    """The Redis part of a webhook, for the view and for an event moved in from the spool
    (``ordered``: placed by message id). Returns (HTTP status, body); raises
    ``redis.RedisError`` when Redis is unreachable."""
    company = config.company_id
    # A delivery is applied once, whatever it is (review 2026-12-03, finding 6: a captured
    # status "pending", replayed within the signature's five minutes, ended a human's
    # takeover). A message's delivery is marked by ENQUEUE with the message; any other
    # event's once it is applied (a failure half-way lets Chatwoot's retry in).
    marker = keys.seen_delivery(company, delivery) if delivery else None
    # (A message's own path checks its delivery in ENQUEUE: no extra round trip there.)
    if marker and not isinstance(parsed, StoredMessage) and gateway.redis.exists(marker):
        return 200, {"status": "ignored", "reason": "duplicate delivery or message"}
    early = _conversation_event(gateway, config, parsed)
    if early is not None:
        if marker:
            gateway.redis.set(marker, "1", ex=gateway.settings.seen_ttl_seconds)
        return 200, {"status": "ignored", "reason": early}
    served_as = config.for_inbox(parsed.inbox_id)  # an inbox may have its own window
    accepted = accept(gateway.redis, gateway.scripts, gateway.settings, served_as, parsed, delivery, ordered)
    result = accepted.result
    if result.status == "duplicate":
        return 200, {"status": "ignored", "reason": "duplicate delivery or message"}
    if result.status == "handoff":
        return 200, {"status": "ignored", "reason": "conversation handed to a human"}
    if result.status == "busy":
        return 429, {
            "error": "too_many_requests",
            "reason": f"{result.length} conversations of this company already hold waiting messages"
            " (MAX_CONVERSATIONS_WAITING): retry later",
        }
    if result.status == "full":
        return 429, {
            "error": "too_many_requests",
            "reason": f"conversation {parsed.conversation_id} already holds {result.length} messages",
        }
    log.info(
        "message queued company=%s conversation=%s message=%s position=%d due_in=%.1fs",
        company,
        parsed.conversation_id,
        parsed.id,
        result.length,
        result.due_in_seconds,
    )
    answer = {
        "status": "queued",
        "queue_position": result.length,
        "batching": {
            "mode": served_as.batch_window_mode,
            "window_seconds": served_as.batch_window_seconds,
            "max_wait_seconds": served_as.batch_max_wait_seconds,
            "new_batch": accepted.new_batch,
            "due_in_seconds": result.due_in_seconds,
        },
    }
    if result.holder:
        answer["lease_holder"] = result.holder
    return 202, answer


# -- the local spool (app/intake/spool.py) ------------------------------------------------

_KINDS = {"status": StatusChange, "agent_reply": AgentReply, "ignored": Ignored}


def _spool_entry(company: str, parsed, delivery: str | None) -> dict:  # type: ignore[no-untyped-def]
    entry: dict = {"company": company, "delivery": delivery}
    if isinstance(parsed, StoredMessage):  # the assignee too: who holds the conversation is observed
        return {**entry, "kind": "message", "message": parsed.to_json(), "assignee": parsed.assignee}
    if isinstance(parsed, MessageUpdate):
        message = parsed.message
        return {
            **entry,
            "kind": "update",
            "message": message.to_json(),
            "assignee": message.assignee,
            "deleted": parsed.deleted,
        }
    kind = next(name for name, cls in _KINDS.items() if isinstance(parsed, cls))
    return {**entry, "kind": kind, "event": dataclasses.asdict(parsed)}


def _from_spool(entry: dict):  # type: ignore[no-untyped-def]
    if entry["kind"] in ("message", "update"):
        message = dataclasses.replace(
            StoredMessage.from_json(entry["message"]), assignee=entry.get("assignee")
        )
        return message if entry["kind"] == "message" else MessageUpdate(message, bool(entry.get("deleted")))
    return _KINDS[entry["kind"]](**entry["event"])


def _spooled(gateway, config, parsed, delivery: str | None):  # type: ignore[no-untyped-def]
    """Keep the event in the local spool (Redis is unreachable): 202, or 500 when even
    the spool cannot take it."""
    try:
        gateway.spool.append(_spool_entry(config.company_id, parsed, delivery))
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


def start_moving(gateway) -> None:  # type: ignore[no-untyped-def]
    """Start the thread that moves the spool into Redis once Redis answers."""

    def ready() -> bool:
        try:
            return bool(gateway.redis.ping())
        except redis.RedisError:
            return False

    def deliver(entry: dict) -> None:
        config = gateway.settings.company(entry.get("company", ""))
        if config is None:
            log.error("spooled event of an unknown company dropped company=%s", entry.get("company"))
            return
        handle(gateway, config, _from_spool(entry), entry.get("delivery"), ordered=True)
        SPOOLED.dec()

    gateway.spool.start_mover(ready, deliver)
