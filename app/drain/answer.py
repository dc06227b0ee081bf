"""Asking once: the step that gets a batch's answer — from a gate (``app.drain.gates``)
or from the bot — and stores it in the reply ledger, lease-checked, before anything
is posted. When the bot fails, the fallback is stored in the answer's place, like
any answer: posted once, marked as the gateway's own, and the batch then goes to the
dead letters. When the contact kept typing while the bot thought (text only, at most
``SUPERSEDE_MAX`` times), the answer is stale: not stored, and the newer fragments
come back to be answered with the rest (``Superseded``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from app.batching.rules import Segment
from app.bots import BotReply, ask_bot, bot_request
from app.chatwoot.context import QUOTE
from app.chatwoot.messages import StoredMessage
from app.chatwoot.replies import reply_parts
from app.drain.claim import count_claim, parse
from app.drain.gates import first_gate
from app.drain.ledger import StoredAnswer
from app.drain.post import HOLDING_PREFIX, batch_poster
from app.drain.run import Batch, RunContext
from app.errors import BotError
from app.logs import mask_secrets
from app.metrics import Histogram, Stat, count_into
from app.store import keys
from app.store.scripts import RoundTrip

__all__ = ["Superseded", "answer_once"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Superseded:
    """The answer was stale: these fragments arrived while the bot thought."""

    newer: list[StoredMessage]


def answer_once(
    ctx: RunContext, batch: Batch, segment: Segment, superseded: int
) -> StoredAnswer | Superseded:
    """The stored answer to ``segment``, or the fragments that superseded it (the
    ``superseded``-th time for this batch)."""
    cid, config = ctx.company_id, ctx.company
    started = time.perf_counter()
    gated = first_gate(ctx, segment)
    failure = ""
    try:
        slow = (config.bot_holding_after_seconds, lambda: _hold(ctx, batch, segment))
        held = slow if config.bot_holding_message and not config.drafts else None
        if gated is None:
            request = bot_request(cid, segment, quoted_texts(ctx, segment))
            reply = ask_bot(ctx.bot, request, config.bot_timeout_seconds, held)
        else:
            reply = gated
    except BotError as exc:
        fallback = config.bot_fallback_message
        reply, failure = BotReply((fallback,) if fallback else ()), mask_secrets(str(exc))[:500]
    latency = time.perf_counter() - started
    answer = StoredAnswer(
        segment.key,
        tuple(reply_parts(reply.replies, config.reply_split)),
        reply.handoff,
        (reply.team or config.handoff_team_id) if reply.handoff else None,
        reply.note if reply.handoff else "",
        failure,
        gateway=gated is not None,
    )
    counted = RoundTrip(ctx.client)  # the call's counters go in the store's round trip
    if gated is None:
        counted.pipe.hincrby(keys.stats(cid), Stat.BOT_CALLS, 1)
        if failure:
            counted.pipe.hincrby(keys.stats(cid), Stat.BOT_FAILURES, 1)
        else:
            count_into(counted.pipe, cid, Histogram.BOT_LATENCY, latency)
    ctx.proven()
    # A gate's reply does not give way to newer fragments (a keyword: the contact asked for a human).
    look = (
        gated is None
        and not failure
        and superseded < config.supersede_max
        and segment.messages[-1].is_text_only
    )
    assert ctx.ledger is not None
    message_ids = [m.id for m in segment.messages]
    most = ctx.settings.batch_max_messages if look else 0
    result = ctx.ledger.store_answer(answer, message_ids, most, counted)
    if result.stored:
        batch.state.store(answer, message_ids)
        return answer
    count_claim(ctx, result.newer, append=True)
    newer = parse(ctx, batch, result.newer)
    ctx.count(Stat.SUPERSEDED_RUNS)
    log.info("stale reply suppressed company=%s conversation=%s newer=%d", cid, ctx.conversation, len(newer))
    return Superseded(newer)


def quoted_texts(ctx: RunContext, segment: Segment) -> dict[int, str]:
    """The text of the messages ``segment``'s messages quote, where the gateway has it:
    one of the batch, or one of its own replies (kept with its own-reply marker while
    BOT_CONTEXT has "quoted"). No round trip when nothing is quoted."""
    wanted = {
        quote["id"]
        for m in segment.messages
        if (quote := (m.context or {}).get(QUOTE)) and isinstance(quote.get("id"), int)
    }
    if not wanted:
        return {}
    found = {m.id: m.bot_text for m in segment.messages if m.id in wanted}
    asked = sorted(wanted - found.keys())
    if asked:
        kept = ctx.client.mget([keys.own_reply(ctx.company_id, message_id) for message_id in asked])
        found.update({i: text for i, text in zip(asked, kept, strict=True) if text and text != "1"})
    return found


def _hold(ctx: RunContext, batch: Batch, segment: Segment) -> None:
    """BOT_HOLDING_MESSAGE, once the bot has thought for BOT_HOLDING_AFTER_SECONDS: posted
    through the ledger like an answer's part (its own marks, pending then sent), under one
    id per batch, so that neither a superseded call nor a run resuming the batch after a
    crash posts it twice."""
    message = ctx.company.bot_holding_message
    holding = StoredAnswer(f"{HOLDING_PREFIX}{batch.first_id}", (message,), False, gateway=True)
    poster = batch_poster(ctx, batch)
    account, after = segment.messages[0].account_id, max(m.id for m in segment.messages)
    failed = poster.post(account, holding, after_id=after)
    if failed is not None:
        log.error(
            "holding message not sent company=%s conversation=%s error=%s",
            ctx.company_id,
            ctx.conversation,
            failed[1],
        )
