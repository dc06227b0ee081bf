"""Claiming a batch: the step that moves it into ``webhook_processing`` (counting an
attempt) and reads, in one round trip, what answering it needs — whether humans
hold the conversation and what the reply ledger holds — with the batch's counters,
fragment gaps and the contact's pace; then ``parse``, which turns stored entries
into messages (an unreadable one is dead-lettered) with their voice notes' text."""

from __future__ import annotations

import logging

from app.batching.analytics import TURN, LoggedFragment, count_gaps, log_fragments
from app.batching.pace import PACE_TTL_SECONDS, spans_a_turn
from app.batching.smart import Reading, read_message
from app.bots.documents import DocumentReader, wants_document
from app.bots.reading import FAILED, read_attachments
from app.bots.transcribe import Budget, with_transcripts
from app.chatwoot.messages import Attachment, StoredMessage, read_stored, received_at
from app.drain.endings import dead_letter
from app.drain.ledger import LedgerState
from app.drain.run import Batch, Claimed, RunContext
from app.metrics import Histogram, Stat, count_into
from app.store import keys

__all__ = ["claim", "count_claim", "pace_subject", "parse", "reading"]

log = logging.getLogger(__name__)


def claim(ctx: RunContext) -> Claimed:
    """A leftover batch, or the next one (empty ``raws``: nothing to claim)."""
    ctx.claimed = True  # before the call: its reply may be lost after it counted
    claimed = ctx.scripts.batch.claim_batch(
        ctx.company_id, ctx.conversation, ctx.run_id, ctx.settings.batch_max_messages
    ).run()
    held, state = False, LedgerState({})
    if claimed.messages:
        held, state = count_claim(ctx, claimed.messages, append=False) or (held, state)
    return Claimed(claimed.messages, claimed.attempts, claimed.last_error, held, state)


def count_claim(ctx: RunContext, batch: list[str], append: bool) -> tuple[bool, LedgerState] | None:
    """Batch size, fragment gaps and the contact's pace, with (for a new batch, not
    ``append``) whether humans hold the conversation and the ledger, in one round trip."""
    arrivals = _arrivals(batch)
    cid = ctx.company_id
    pipe = ctx.client.pipeline(transaction=False)
    if not append:
        pipe.exists(ctx.key(keys.handoff), ctx.key(keys.paused))
        pipe.hgetall(ctx.key(keys.ledger))
        pipe.hincrby(keys.stats(cid), Stat.BATCHES, 1)
        count_into(pipe, cid, Histogram.BATCH_SIZE, len(batch))
    previous = ctx.previous
    ctx.previous = count_gaps(pipe, cid, ctx.conversation, ctx.previous, arrivals, ctx.turn_at)
    length, paced = ctx.settings.fragment_log_length, ctx.company.paced
    messages = [read_stored(raw) for raw in batch] if length or paced else []  # parsed once here
    if length:
        logged = _logged(batch, messages, ctx.conversation, previous, ctx.turn_at)
        log_fragments(pipe, cid, logged, length)
    if paced and arrivals:
        key, pace = ctx.pace_of(pace_subject(messages[0], ctx.conversation))
        pace = pace.observe(arrivals, ctx.turn_at)
        ctx.learned_pace(key, pace)
        pipe.set(key, pace.to_json(), ex=PACE_TTL_SECONDS)
    results = pipe.execute()
    return None if append else (bool(results[0]), LedgerState(dict(results[1])))


def parse(ctx: RunContext, batch: Batch, raws: list[str]) -> list[StoredMessage]:
    """Stored entries as messages (noted in ``batch.raw_of``); an unreadable one is
    dead-lettered with its reason. Voice notes get their text (TRANSCRIBE_BACKEND),
    within the batch's budget, kept in the ledger across attempts."""
    messages = []
    for raw in raws:
        try:
            message = StoredMessage.from_json(raw)
        except (ValueError, TypeError, KeyError) as exc:
            dead_letter(ctx, [raw], "parse", f"stored message unreadable: {type(exc).__name__}")
            continue
        batch.raw_of[message.id] = raw
        messages.append(message)
    if ctx.transcribe is not None and any(m.attachments for m in messages):
        assert ctx.ledger is not None
        if batch.budget is None:  # one budget per batch, superseding fragments included
            batch.budget = Budget.of(ctx.company)
        ledger, state = ctx.ledger, batch.state
        messages = with_transcripts(
            messages,
            ctx.transcribe,
            batch.budget,
            state.transcript,
            lambda message, index, value: ledger.keep_transcript(state, message, index, value),
            lambda why: _transcription_failed(ctx, why),
        )
    if ctx.company.document_max_pages and any(wants_document(a) for m in messages for a in m.attachments):
        messages = _with_documents(ctx, batch, messages)
    return messages


def _with_documents(ctx: RunContext, batch: Batch, messages: list[StoredMessage]) -> list[StoredMessage]:
    """PDFs read into text (app.bots.documents), kept in the ledger like transcripts."""
    assert ctx.ledger is not None
    ledger, state, reader = ctx.ledger, batch.state, DocumentReader(ctx.company)

    def read(attachment: Attachment) -> str:
        result = reader.read(attachment)
        if result.startswith(FAILED):
            ctx.count(Stat.DOCUMENTS_UNREAD)
            log.warning(
                "document not read company=%s conversation=%s: %s",
                ctx.company_id,
                ctx.conversation,
                result[len(FAILED) :],
            )
        return result

    def keep(message: int, index: int, value: str) -> None:
        ledger.keep_transcript(state, message, index, value)

    return read_attachments(messages, wants_document, read, state.transcript, keep, "text")


def _transcription_failed(ctx: RunContext, why: str) -> None:
    """The voice note goes to the bot without its text: never dropped."""
    ctx.count(Stat.TRANSCRIPTIONS_FAILED)
    log.warning(
        "voice note not transcribed company=%s conversation=%s: %s", ctx.company_id, ctx.conversation, why
    )


def _arrivals(batch: list[str]) -> list[float]:
    # an unreadable entry is dead-lettered later; it has no arrival to count
    return [t for t in map(received_at, batch) if t is not None]


def reading(message: StoredMessage | None) -> Reading:
    """How a stored message reads (``app.batching.smart.read``); an unreadable one as plain."""
    if message is None:
        return Reading.PLAIN
    return read_message(message.content, [a.file_type for a in message.attachments])


def pace_subject(message: StoredMessage | None, conversation: str) -> str:
    """Whose pace a stored message tells: its contact's, else its conversation's."""
    contact = message.contact_id if message else None
    return f"contact-{contact}" if contact is not None else f"conversation-{conversation}"


def _logged(
    batch: list[str],
    messages: list[StoredMessage | None],
    conversation: str,
    previous: float | None,
    turn_at: float | None,
) -> list[LoggedFragment]:
    """The batch (raw, and as read by ``read_stored``) as the fragment log keeps it: whose,
    when, how it reads; and the turn before it (an answer went out after ``previous``, the
    latest fragment logged), so a replay of the log splits the burst there too."""
    logged = []
    for raw, message in zip(batch, messages, strict=True):
        at = message.received_at if message else received_at(raw)
        if at is None:
            continue
        subject = pace_subject(message, conversation)
        if not logged and previous is not None and spans_a_turn(previous, at, turn_at):
            logged.append(LoggedFragment(subject, turn_at, TURN))  # type: ignore[arg-type]
        logged.append(LoggedFragment(subject, at, reading(message).value))
    return logged
