"""Acceptance: the Redis part of a webhook (``handle``), for the view and for an event
moved in from the local spool.

``screen`` first applies what changes who holds the conversation rather than
reaching the bot (``app.conversation.events``); a message that reaches the bot is
then accepted in one atomic Redis step: ``accept`` runs the ENQUEUE script —
de-duplicate, bound the queue, push the message (with Redis's clock as its arrival
time) and schedule the conversation at its batch's due time in
``<company>:webhook_due``. The webhook publishes no Celery task: a dispatcher in the
workers (``app.schedule.dispatcher``) claims due conversations. So every webhook
costs exactly one EVALSHA.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from app.chatwoot.messages import AgentReply, Ignored, MessageUpdate, StatusChange, StoredMessage
from app.chatwoot.payload import Parsed
from app.conversation.events import on_agent_reply, on_status, track_pause_labels
from app.conversation.ownership import Event
from app.conversation.sessions import reset_session
from app.settings import CompanyConfig, Settings
from app.settings.company import says
from app.store import keys
from app.store.scripts import Enqueued, EnqueueResult, Scripts, Updated

__all__ = ["Accepted", "Parsed", "Serving", "accept", "handle", "screen"]

log = logging.getLogger(__name__)


class Serving(Protocol):
    """What acceptance needs of the web process (``app.web.Gateway``)."""

    redis: redis.Redis
    scripts: Scripts
    settings: Settings


@dataclass(frozen=True)
class Accepted:
    result: EnqueueResult

    @property
    def new_batch(self) -> bool:
        return self.result.length == 1


def accept(
    client: redis.Redis,
    scripts: Scripts,
    settings: Settings,
    company: CompanyConfig,
    message: StoredMessage,
    delivery_id: str | None,
    ordered: bool = False,
) -> Accepted:
    """Make the message durable in its conversation's queue and schedule the conversation.
    ``ordered``: place it by its Chatwoot id (a message moved in from the local spool)."""
    command = company.asks_for_a_human(message)  # due at once: a command does not wait for the window
    return Accepted(
        scripts.intake.enqueue(settings, company, message, delivery_id, ordered, due_now=command).run()
    )


def handle(
    gateway: Serving, config: CompanyConfig, parsed: Parsed, delivery: str | None, ordered: bool = False
) -> tuple[int, dict[str, Any]]:
    """The Redis part of a webhook (``ordered``: an event moved in from the spool, placed
    by message id). Returns (HTTP status, body); raises ``redis.RedisError`` when Redis
    is unreachable."""
    company = config.company_id
    # A delivery is applied once, whatever it is (review 2026-12-03, finding 6: a captured
    # status "pending", replayed within the signature's five minutes, ended a human's
    # takeover). A message's delivery is marked by ENQUEUE with the message; any other
    # event's once it is applied (a failure half-way lets Chatwoot's retry in).
    marker = keys.seen_delivery(company, delivery) if delivery else None
    # (A message's own path checks its delivery in ENQUEUE: no extra round trip there.)
    if marker and not isinstance(parsed, StoredMessage) and gateway.redis.exists(marker):
        return 200, {"status": "ignored", "reason": "duplicate delivery or message"}
    early = screen(gateway, config, parsed)
    if early is not None:
        if marker:
            gateway.redis.set(marker, "1", ex=gateway.settings.seen_ttl_seconds)
        return 200, {"status": "ignored", "reason": early}
    assert isinstance(parsed, StoredMessage)
    served_as = config.for_inbox(parsed.inbox_id)  # an inbox may have its own window
    accepted = accept(gateway.redis, gateway.scripts, gateway.settings, served_as, parsed, delivery, ordered)
    result = accepted.result
    if result.status is Enqueued.DUPLICATE:
        return 200, {"status": "ignored", "reason": "duplicate delivery or message"}
    if result.status is Enqueued.HANDOFF:
        return 200, {"status": "ignored", "reason": "conversation handed to a human"}
    if result.status is Enqueued.BUSY:
        return 429, {
            "error": "too_many_requests",
            "reason": f"{result.length} conversations of this company already hold waiting messages"
            " (MAX_CONVERSATIONS_WAITING): retry later",
        }
    if result.status is Enqueued.FULL:
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
    answer: dict[str, Any] = {
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


def screen(gateway: Serving, config: CompanyConfig, parsed: Parsed) -> str | None:
    """Handle what changes the bot's state rather than reaching it; the reason, or None
    (a message for the bot). Whatever a payload says of who holds its conversation is
    observed, the payloads the bot ignores included (docs/conversation.md: no single
    event can be relied on)."""
    client, scripts = gateway.redis, gateway.scripts
    if isinstance(parsed, Ignored):
        seen, turn = parsed.seen, parsed.turn
        scripts.ownership.observe(config, parsed.conversation_id, seen, count_ignored=True, turn=turn).run()
        return parsed.reason
    if isinstance(parsed, StatusChange):
        track_pause_labels(client, config, parsed.conversation_id, parsed.labels)
        return on_status(scripts, config, parsed)
    if isinstance(parsed, AgentReply):
        return on_agent_reply(client, scripts, config, parsed)
    if isinstance(parsed, MessageUpdate):
        return _message_update(scripts, config, parsed)
    if config.answers_only_pending and parsed.conversation_status != "pending" and not config.drafts:
        scripts.ownership.observe(config, parsed.conversation_id, parsed.seen, count_ignored=True).run()
        mode = "BOT_ONLY_PENDING" if config.bot_only_pending else f"{config.chatwoot_integration} mode"
        return (
            f"conversation is {parsed.conversation_status}: the bot answers pending conversations"
            f" only ({mode}); open ones belong to humans"
        )
    track_pause_labels(client, config, parsed.conversation_id, parsed.labels)  # a label gone: resume
    if says(parsed, config.session_reset_keywords):
        scripts.ownership.observe(config, parsed.conversation_id, parsed.seen, count_ignored=True).run()
        reset_session(client, scripts, config, parsed.conversation_id, Event.RESET_KEYWORD)
        return "session reset"
    return None


_UPDATES = {
    Updated.REPLACED: "message updated while it waited in its batch: the bot sees it as it is now",
    Updated.REMOVED: "message deleted while it waited in its batch: the bot will not see it",
    Updated.GONE: "message updated after it was taken into a batch (or never queued): nothing changes",
}


def _message_update(scripts: Scripts, config: CompanyConfig, parsed: MessageUpdate) -> str:
    """``message_updated`` (an edit, Chatwoot's transcript arriving, a deletion): applied
    to the message while it waits in its batch; never a new message, never a second turn."""
    scripts.ownership.observe(config, parsed.conversation_id, parsed.seen).run()
    updated = scripts.intake.update_queued(config.company_id, parsed).run()
    log.info(
        "message updated company=%s conversation=%s message=%s deleted=%s result=%s",
        config.company_id,
        parsed.conversation_id,
        parsed.message.id,
        parsed.deleted,
        updated.value,
    )
    return _UPDATES[updated]
