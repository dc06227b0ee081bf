"""Draining one conversation: the body of the ``gateway.drain`` task.

One run of ``drain`` (``Drainer.run``: one delivery of a task, holding the lease under its
own run id, ``app.schedule.lease``), step by step — each step one module:
1. ``due``: resumes a leftover ``webhook_processing`` batch first (a drainer died);
2. ``due``: otherwise waits for the batch to close — not by sleeping, nor in a
   countdown task: it schedules the conversation at the due time (by Redis's
   clock) in ``<company>:webhook_due`` and gives up the lease (DEFER); the
   dispatcher hands it to a fresh task then, and a solo worker serves other
   conversations meanwhile;
3. ``claim`` claims the batch atomically into ``webhook_processing`` (counting an
   attempt), ``plan`` says which bot calls it needs, ``gates`` which
   need none, ``answer`` asks the bot once per call and stores the answer in the reply
   ledger (``app.drain.ledger``) before ``post`` posts it part by part, and only
   then lets the messages leave ``webhook_processing``; a resumed batch posts
   the stored answer and never asks the bot again;
4. ``due`` releases the lease in the same script that checks the queue is empty.
Every write after the bot call is a Lua script that checks the run's lease,
and nothing is posted unless the run can prove its lease (a fresh renewal).
A batch that fails ``BATCH_MAX_ATTEMPTS`` times is dead-lettered
(``stage: "crash"``, ``endings``) and the conversation moves on; a conversation
humans hold gets its messages left to them (``handoff``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import redis

from app.drain.answer import Superseded, answer_once
from app.drain.claim import claim, parse
from app.drain.due import defer, look, release_if_empty
from app.drain.endings import guarded, release_attempt
from app.drain.handoff import held_by_humans, leave_to_humans
from app.drain.ledger import Ledger
from app.drain.plan import plan
from app.drain.post import post_answer
from app.drain.run import Batch, Claimed, DrainTask, RunContext
from app.drain.typing_indicator import Typing
from app.errors import LeaseLost
from app.schedule.lease import lease_keeper, new_run_id
from app.store import keys

__all__ = ["MAX_BATCHES_PER_RUN", "Drainer", "Outcome", "answer_batch", "drain"]

log = logging.getLogger(__name__)
MAX_BATCHES_PER_RUN = 20

Release = Callable[[RunContext], bool]


class Outcome(StrEnum):
    """How a run ended (logged, returned by the task)."""

    RELEASED = "released"  # nothing left: the lease is free
    DEFERRED = "deferred"  # scheduled again (a batch not yet due, a retry, time up)
    NOT_HOLDER = "not-holder"  # another run holds the conversation: nothing done
    LEASE_LOST = "lease-lost"  # the lease went to another run mid-way: stopped


@dataclass
class Drainer(DrainTask):
    """The task's facade: ``run()`` drains with a fresh context. ``release`` is the step
    that ends a run with nothing left (a test wraps it)."""

    release: Release = release_if_empty

    def run(self) -> Outcome:
        """Drain what is due; return what happened (for logs and tests)."""
        return drain(self.context(), self.release)


def drain(ctx: RunContext, release: Release = release_if_empty) -> Outcome:
    """One run: take the lease, drain what is due, end released or deferred."""
    lease = ctx.key(keys.lease)
    ctx.run_id = new_run_id(ctx.task_id)
    ttl = ctx.settings.lease_ttl_seconds
    ctx.started = time.monotonic()
    start = ctx.scripts.lease.start_run(lease, ctx.task_id, ctx.run_id, int(ttl * 1000))
    first = look(ctx, start)  # one round trip: take the lease, look at the queue
    if not first.held:
        return Outcome.NOT_HOLDER
    keeper = lease_keeper(ctx.client, ctx.scripts, ttl, ctx.settings.run_max_seconds)
    ctx.run = keeper.keep(lease, ctx.run_id, ctx.started)
    ctx.ledger = Ledger(ctx.client, ctx.scripts, ctx.company_id, ctx.conversation, ctx.run_id)
    try:
        return _loop(ctx, first.wait, release)
    except LeaseLost:
        log.warning(
            "lease lost company=%s conversation=%s task=%s run=%s",
            ctx.company_id,
            ctx.conversation,
            ctx.task_id,
            ctx.run_id,
        )
        release_attempt(ctx)
        return Outcome.LEASE_LOST
    except redis.RedisError:
        release_attempt(ctx)
        raise
    finally:
        keeper.drop(ctx.run)


def _loop(ctx: RunContext, wait: float | None, release: Release) -> Outcome:
    for _ in range(MAX_BATCHES_PER_RUN):
        if wait is None:
            if release(ctx):
                return Outcome.RELEASED
        elif wait > 0:
            return _deferred(ctx, wait)
        elif time.monotonic() - ctx.started > ctx.settings.run_max_seconds / 2:
            return _deferred(ctx, 0)  # a fresh run goes on: a healthy run never meets its deadline
        else:
            claimed = claim(ctx)
            if claimed.raws:
                retry_in = guarded(ctx, claimed, answer_batch)
                if retry_in is not None:
                    return _deferred(ctx, retry_in)
                if release(ctx):  # the common end: one round trip
                    return Outcome.RELEASED
        wait = look(ctx).wait
    return _deferred(ctx, 0)


def _deferred(ctx: RunContext, seconds: float) -> Outcome:
    defer(ctx, seconds)
    return Outcome.DEFERRED


def answer_batch(ctx: RunContext, claimed: Claimed) -> None:
    """Answer a claimed batch: for each bot call of its plan, leave it to the humans who
    hold the conversation, or get the answer once (re-planning when newer fragments
    superseded it) and post it."""
    batch = Batch.of(claimed)
    messages = parse(ctx, batch, claimed.raws)
    if not messages:
        return
    account, batch.first_id = messages[0].account_id, messages[0].id
    max_avg_chars = ctx.company.batch_max_avg_chars
    typing: Typing | None = None
    try:
        calls = plan(messages, batch.state, max_avg_chars)
        superseded = 0
        while calls:
            segment, answer = calls.pop(0)
            ctx.proven()
            raws = [batch.raw_of[m.id] for m in segment.messages]
            if held_by_humans(ctx, batch):
                leave_to_humans(ctx, raws)
                continue
            if answer is None:
                if not ctx.company.drafts:  # a draft is for the agents: the contact sees no "typing"
                    typing = typing or Typing(ctx.replier, account, ctx.conversation)
                answered = answer_once(ctx, batch, segment, superseded)
                if isinstance(answered, Superseded):
                    # The contact kept typing while the bot thought: its answer is stale.
                    superseded += 1
                    rest = [m for call in calls for m in call.segment.messages]
                    calls = plan([*segment.messages, *rest, *answered.newer], batch.state, max_avg_chars)
                    continue
                answer = answered
                if typing is not None:
                    batch.typing_shown |= typing.settle()  # an "on" in flight lands before the reply
                typing = None  # the next call gets its own
            post_answer(ctx, batch, segment, raws, answer)
    finally:
        if typing is not None:
            batch.typing_shown |= typing.settle()
        if batch.typing_shown:
            ctx.replier.typing(account, ctx.conversation, False)
