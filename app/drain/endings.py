"""How a batch ends when it is not simply answered: retried after a failure with a
backoff, dead-lettered after ``BATCH_MAX_ATTEMPTS`` (``stage: "crash"``) or at once
for a reason of its own (``parse``, ``bot``, ``chatwoot``), and ``complete`` — the
script that lets its messages leave ``webhook_processing``, whichever way it ended.
And the attempt a run takes back when it stops for a reason that is not its batch's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis

from app.drain.run import Claimed, RunContext
from app.errors import LeaseLost
from app.logs import mask_secrets
from app.store import keys

__all__ = ["RETRY_CAP_SECONDS", "complete", "dead_letter", "guarded", "release_attempt"]

log = logging.getLogger(__name__)
RETRY_CAP_SECONDS = 30.0


def guarded(ctx: RunContext, claimed: Claimed, answer: Callable[[RunContext, Claimed], None]) -> float | None:
    """Answer a batch; a failure counts against it. Returns None when the batch is done
    (answered or dead-lettered), else the seconds before a fresh run retries."""
    limit = ctx.settings.batch_max_attempts
    if claimed.attempts >= limit:
        error = claimed.last_error or f"its worker died while handling it, {claimed.attempts} times"
        dead_letter(ctx, claimed.raws, "crash", error, attempts=claimed.attempts)
        return None
    try:
        answer(ctx, claimed)
        return None
    except (LeaseLost, redis.RedisError):
        raise  # not the batch's fault: the lease or Redis went away
    except Exception as exc:  # a poison batch: counted, retried, then dead-lettered
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.exception(
            "batch failed company=%s conversation=%s attempt=%d/%d",
            ctx.company_id,
            ctx.conversation,
            claimed.attempts + 1,
            limit,
        )
        assert ctx.ledger is not None
        attempts = ctx.ledger.note_error(error)  # progress made by this run resets them
        if attempts >= limit:
            left = ctx.client.lrange(ctx.key(keys.processing), 0, -1)
            dead_letter(ctx, left, "crash", error, attempts=attempts)
            return None
        return min(RETRY_CAP_SECONDS, 2.0 ** max(1, attempts))


def release_attempt(ctx: RunContext) -> None:
    """The run stops for a reason that is not its batch's (Redis unreachable, its lease
    taken): the attempt its claim counted is taken back, so Redis blips never
    dead-letter a healthy batch as failing. A run past RUN_MAX_SECONDS keeps its
    attempt: a batch that hangs every run is the batch's own doing."""
    assert ctx.run is not None and ctx.ledger is not None
    if not ctx.claimed or ctx.run.overran:
        return
    try:
        ctx.ledger.release_attempt()
    except redis.RedisError as exc:
        log.error(
            "attempt not taken back company=%s conversation=%s run=%s error=%s",
            ctx.company_id,
            ctx.conversation,
            ctx.run_id,
            type(exc).__name__,
        )


def complete(ctx: RunContext, raws: list[str], letter: dict | None = None) -> None:
    """The messages leave ``webhook_processing`` (as a dead letter when ``letter``)."""
    text = json.dumps(letter, ensure_ascii=False) if letter else ""
    most = ctx.settings.dead_letter_max
    dropped = ctx.scripts.batch.complete(ctx.company_id, ctx.conversation, ctx.run_id, raws, text, most).run()
    if dropped:
        log.error(
            "dead-letter list full company=%s: dropped the %d oldest entries (DEAD_LETTER_MAX=%d)",
            ctx.company_id,
            dropped,
            most,
        )


def dead_letter(ctx: RunContext, raws: list[str], stage: str, error: str, **extra: object) -> None:
    log.error(
        "dead letter company=%s conversation=%s stage=%s messages=%d error=%s",
        ctx.company_id,
        ctx.conversation,
        stage,
        len(raws),
        error,
    )
    letter = {
        "company": ctx.company_id,
        "conversation_id": ctx.conversation,
        "stage": stage,
        "error": mask_secrets(error),
        "messages": raws,
        "failed_at": ctx.clock(),
        "task_id": ctx.task_id,
        "run_id": ctx.run_id,
        **extra,
    }
    complete(ctx, raws, letter)
