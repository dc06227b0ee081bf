"""Accepting a message: one atomic Redis step, then (sometimes) one publish.

``accept`` runs the ENQUEUE script (de-duplicate, bound the queue, RPUSH + TTL,
take the lease if free). The common case — a fragment arriving while the
conversation already has a live drainer — costs exactly one EVALSHA. The first
fragment also publishes the drain task with a countdown of the window (the
shortest window in learned mode: the drainer then knows the contact's own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from celery import Celery

from app import keys
from app.lease import new_task_id, schedule_drain, take_over_if_finished
from app.payload import StoredMessage
from app.scripts import EnqueueResult, Scripts
from app.settings import CompanyConfig, Settings

__all__ = ["Accepted", "accept"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    result: EnqueueResult
    task_id: str
    scheduled: bool


def accept(
    client: redis.Redis,
    scripts: Scripts,
    celery: Celery,
    settings: Settings,
    company: CompanyConfig,
    message: StoredMessage,
    delivery_id: str | None,
    ordered: bool = False,
) -> Accepted:
    """Make the message durable in its conversation's queue and make sure a drainer exists.
    ``ordered``: place it by its Chatwoot id (a message moved in from the local spool)."""
    cid, conv = company.company_id, message.conversation_id
    fresh = new_task_id()
    lease_px = int((company.first_countdown + settings.lease_ttl_seconds) * 1000)
    raw = scripts.enqueue(
        keys=[
            keys.queue(cid, conv),
            keys.active_task(cid, conv),
            keys.seen_message(cid, message.id),
            keys.seen_delivery(cid, delivery_id or "-"),
            keys.conversation_index(cid),
            keys.stats(cid),
            keys.handoff(cid, conv),
            keys.sessions(cid),
            keys.session_accounts(cid),
            keys.status(cid, conv),
        ],
        args=[
            message.open_json(),
            settings.queue_ttl_seconds,
            company.max_queue_per_conversation,
            fresh,
            lease_px,
            settings.seen_ttl_seconds,
            conv,
            "1" if delivery_id else "0",
            message.conversation_status or "",
            message.account_id,
            company.status_ttl_seconds,
            str(message.id) if ordered else "",
        ],
        client=client,
    )
    result = EnqueueResult(str(raw[0]), int(raw[1]), str(raw[2]), int(raw[3]), bool(int(raw[4])))
    if result.status != "queued":
        return Accepted(result, "", False)
    if result.acquired:
        _publish(client, scripts, celery, cid, conv, fresh, company.first_countdown)
        return Accepted(result, fresh, True)
    if result.holder_pttl_ms < settings.lease_ttl_seconds * 500:
        # The holder is more than half a lease late: only then pay for a result lookup.
        taken = take_over_if_finished(client, scripts, celery, cid, conv, result.holder, lease_px)
        if taken:
            return Accepted(result, taken, True)
    return Accepted(result, result.holder, False)


def _publish(
    client: redis.Redis,
    scripts: Scripts,
    celery: Celery,
    company: str,
    conv: str,
    task_id: str,
    countdown: float,
) -> None:
    try:
        schedule_drain(celery, company, conv, task_id, countdown)
    except Exception:
        # The message is durable and the lease names a task that does not exist:
        # free the lease so the next webhook or the sweeper schedules a drainer.
        log.exception("drain task not published company=%s conversation=%s task=%s", company, conv, task_id)
        try:
            scripts.delete_if_equals(keys=[keys.active_task(company, conv)], args=[task_id], client=client)
        except redis.RedisError:
            pass  # the lease then simply expires; the sweeper reschedules
