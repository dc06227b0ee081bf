"""The per-conversation lease: who may drain a conversation, and scheduling.

The lease ``<company>:webhook_active_task:<conversation>`` holds the id of the
one Celery task allowed to drain that conversation — once that task starts,
the id of its run (``app.keeper``: task id + a token, so two deliveries of one
task id are two runs and only one holds) — with a short TTL renewed by the
running task. Its TTL is the liveness signal. ``AsyncResult`` of the id
is consulted only to learn that a holder has *finished*: an id the backend
never heard of, a countdown task not yet due and a task killed mid-run all read
PENDING or STARTED, so a state can never prove a holder alive.
"""

from __future__ import annotations

import logging
import uuid

import redis
from celery import Celery
from celery.result import AsyncResult

from app import keys
from app.keeper import task_of
from app.scripts import Scripts

__all__ = [
    "DRAIN_TASK",
    "FINISHED_STATES",
    "new_task_id",
    "schedule_drain",
    "take_over_if_finished",
]

log = logging.getLogger(__name__)
DRAIN_TASK = "gateway.drain"
FINISHED_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def new_task_id() -> str:
    return str(uuid.uuid4())


def schedule_drain(celery: Celery, company: str, conversation: str, task_id: str, countdown: float) -> None:
    """Publish the drain task that the lease already names."""
    celery.send_task(
        DRAIN_TASK,
        args=[company, conversation],
        task_id=task_id,
        countdown=max(0.0, round(countdown, 3)),
    )


def take_over_if_finished(
    client: redis.Redis,
    scripts: Scripts,
    celery: Celery,
    company: str,
    conversation: str,
    holder: str,
    lease_px: int,
) -> str | None:
    """Take the lease from a holder that has finished without releasing it.

    Returns the new task id (already scheduled) or None when the holder may be
    alive. The take-over is a compare-and-set on the holder's id.
    """
    state = AsyncResult(task_of(holder), app=celery).state
    if state not in FINISHED_STATES:
        return None
    fresh = new_task_id()
    lease = keys.active_task(company, conversation)
    if not scripts.hand_over(keys=[lease], args=[holder, fresh, lease_px], client=client):
        return None
    client.hincrby(keys.stats(company), "lease_takeovers", 1)
    log.warning(
        "lease taken over company=%s conversation=%s holder=%s state=%s task=%s",
        company,
        conversation,
        holder,
        state,
        fresh,
    )
    schedule_drain(celery, company, conversation, fresh, 0)
    return fresh
