"""When is the conversation's batch due: the step that looks at the queue, and the two
that end a run without a batch (``defer``, ``release_if_empty``).

A batch is never waited for by sleeping nor in a countdown task: the run schedules
the conversation at the due time (by Redis's clock) in ``<company>:webhook_due`` and
gives up the lease (DEFER); the dispatcher hands it to a fresh task then."""

from __future__ import annotations

from dataclasses import dataclass

from app.batching.analytics import prior_window
from app.batching.rules import due_at
from app.batching.window import quiet_period
from app.chatwoot.messages import StoredMessage, read_stored, received_at
from app.drain.claim import pace_subject, reading
from app.drain.run import RunContext
from app.settings import WindowMode
from app.store import keys
from app.store.scripts import Call, RoundTrip

__all__ = ["CHATWOOT_TRANSCRIBES", "Look", "defer", "look", "release_if_empty"]

CHATWOOT_TRANSCRIBES = "chatwoot"  # TRANSCRIBE_BACKEND: Chatwoot's own transcripts, waited for


@dataclass(frozen=True)
class Look:
    """Whether the run holds the lease, and the wait: None when nothing waits, 0 when a
    batch is due (or left over), else the seconds until it is, by Redis's clock."""

    held: bool
    wait: float | None


def look(ctx: RunContext, start: Call[bool] | None = None) -> Look:
    """Look at the queue (``start``, START_RUN, takes the lease in the same round trip);
    notes in ``ctx`` when the latest fragment arrived and the latest answer went out."""
    config = ctx.company
    paced = config.paced
    transcripts = config.transcribe_backend == CHATWOOT_TRANSCRIBES  # wait for Chatwoot's
    batch = RoundTrip(ctx.client)
    if start:
        batch.add(start)
    pipe = batch.pipe
    pipe.llen(ctx.key(keys.processing))
    pipe.lindex(ctx.key(keys.queue), 0)
    pipe.lindex(ctx.key(keys.queue), -1)
    pipe.hget(keys.last_fragment(ctx.company_id), ctx.conversation)
    pipe.hget(keys.turns(ctx.company_id), ctx.conversation)
    pipe.time()
    if paced or transcripts:
        pipe.lrange(ctx.key(keys.queue), 0, ctx.settings.batch_max_messages - 1)
    results = batch.execute()
    held = results.pop(0) if start else True
    leftover, first, last, previous, turn_at, (seconds, micros), *queued = results
    now = seconds + micros / 1e6
    ctx.previous, ctx.turn_at = _float_or_none(previous), _float_or_none(turn_at)
    if leftover:
        return Look(held, 0.0)
    if first is None:
        return Look(held, None)
    first_at, last_at = received_at(first), received_at(last)
    if first_at is None or last_at is None:
        return Look(held, 0.0)  # unreadable entry: claim it now so it is dead-lettered
    smart = config.batch_window_mode == WindowMode.SMART
    latest = read_stored(last) if config.handoff_keywords or smart else None  # read once
    if latest is not None and config.asks_for_a_human(latest):
        return Look(held, 0.0)  # a handoff keyword does not wait for the window
    window = config.batch_window_seconds
    if paced:
        arrivals = [t for t in map(received_at, queued[0]) if t is not None]
        window = _paced_window(ctx, read_stored(first), latest, [*arrivals, last_at])
    due = due_at(config.batch_window_mode, first_at, last_at, window, config.batch_max_wait_seconds)
    if transcripts and any(_untranscribed(read_stored(raw)) for raw in queued[0]):
        # Chatwoot's transcript arrives as message_updated (it replaces the note in the
        # queue and makes the batch due again); never past the max wait: then without text.
        due = max(due, first_at + config.batch_max_wait_seconds)
    return Look(held, max(0.0, due - now))


def _paced_window(
    ctx: RunContext, first: StoredMessage | None, latest: StoredMessage | None, queued: list[float]
) -> float:
    """This contact's quiet period, from what is known of how they type (``app.batching.pace``)
    and, in smart mode, from what the latest fragment says (``app.batching.smart``)."""
    config = ctx.company
    _, pace = ctx.pace_of(pace_subject(first, ctx.conversation))
    prior = prior_window(ctx.client, ctx.company_id, config.batch_window_seconds)
    return quiet_period(
        config.batch_window_mode,
        pace,
        queued,
        reading(latest),
        prior,
        config.batch_window_min_seconds,
        config.batch_window_max_seconds,
        ctx.turn_at,
    )


def _untranscribed(message: StoredMessage | None) -> bool:
    """Does the message hold a voice note Chatwoot has not transcribed yet?"""
    return message is not None and any(
        a.file_type == "audio" and not a.transcribed_text for a in message.attachments
    )


def _float_or_none(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def release_if_empty(ctx: RunContext) -> bool:
    """Give up the lease if nothing waits (in the script that checks: no lost wake-up)."""
    return ctx.scripts.schedule.release_if_empty(ctx.company_id, ctx.conversation, ctx.run_id).run()


def defer(ctx: RunContext, seconds: float) -> None:
    """Schedule the conversation ``seconds`` from now (never more than the max wait)
    and give up the lease: the dispatcher hands it to a fresh task then."""
    seconds = min(seconds, ctx.company.batch_max_wait_seconds)
    ctx.scripts.schedule.defer(ctx.company_id, ctx.conversation, ctx.run_id, seconds).run()
