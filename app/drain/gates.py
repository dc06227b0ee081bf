"""The reasons not to call the bot for a batch, in the order they are asked
(``GATES``): each returns the gateway's own reply in the bot's place, or None to let
the next one decide; when none answers, the bot is asked.

- ``opt_out``: OPT_OUT_KEYWORDS — the contact asked for no more automatic messages,
  in any conversation, until OPT_IN_KEYWORDS;
- ``keyword_handoff``: HANDOFF_KEYWORDS — the contact asked for a human;
- ``off_duty``: BOT_HOURS — outside the bot's hours the humans have the batch;
- ``loop_guard``: LOOP_MAX_REPLIES — the bot has answered this conversation too often
  lately (another bot's auto-replies, a flood); before the budget, which it would burn;
- ``over_budget``: BOT_CALLS_PER_DAY — today's bot calls are used up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from app.batching.rules import Segment
from app.bots import BotReply
from app.drain.run import RunContext
from app.metrics import Stat
from app.settings.company import says
from app.store import keys
from app.store.client import redis_now

__all__ = ["GATES", "first_gate", "keyword_handoff", "loop_guard", "off_duty", "opt_out", "over_budget"]

log = logging.getLogger(__name__)

Gate = Callable[[RunContext, Segment], BotReply | None]


def opt_out(ctx: RunContext, segment: Segment) -> BotReply | None:
    """OPT_OUT_KEYWORDS: a contact who sent one ("STOP", "SAIR") gets OPT_OUT_MESSAGE once
    and no answer of the bot or the gateway again, in any conversation (their messages are
    the humans', in Chatwoot), until they send one of OPT_IN_KEYWORDS."""
    config = ctx.company
    contact = segment.messages[-1].contact_id
    if not config.opt_out_keywords or contact is None:
        return None
    key = keys.opted_out(ctx.company_id)
    if any(says(m, config.opt_out_keywords) for m in segment.messages):
        first = bool(ctx.client.sadd(key, str(contact)))
        if first:
            ctx.count(Stat.OPT_OUTS)
            log.info("contact opted out company=%s contact=%s", ctx.company_id, contact)
        return BotReply((config.opt_out_message,) if first and config.opt_out_message else ())
    if not ctx.client.sismember(key, str(contact)):
        return None
    if any(says(m, config.opt_in_keywords) for m in segment.messages):
        ctx.client.srem(key, str(contact))
        log.info("contact opted in again company=%s contact=%s", ctx.company_id, contact)
        return None  # the bot answers again, this message included
    return BotReply(())  # opted out: left to the humans, silently


def keyword_handoff(ctx: RunContext, segment: Segment) -> BotReply | None:
    """A contact message that is exactly one of HANDOFF_KEYWORDS hands the conversation
    to humans at once: no bot call; HANDOFF_MESSAGE (if set) is the reply."""
    if not any(ctx.company.asks_for_a_human(m) for m in segment.messages):
        return None
    log.info("handoff keyword company=%s conversation=%s", ctx.company_id, ctx.conversation)
    message = ctx.company.handoff_message
    return BotReply((message,) if message else (), handoff=True)


def loop_guard(ctx: RunContext, segment: Segment) -> BotReply | None:
    """LOOP_MAX_REPLIES: this call is counted in the conversation's window
    (LOOP_WINDOW_MINUTES, by Redis's clock); past the most, no bot call: the conversation
    goes to humans with a private note saying why."""
    most = ctx.company.loop_max_replies
    if not most:
        return None
    minutes = ctx.company.loop_window_minutes
    calls = ctx.scripts.housekeeping.count_bot_call(
        ctx.company_id, ctx.conversation, minutes * 60, most, segment.key
    ).run()
    if calls < most:
        return None
    ctx.count(Stat.LOOP_HANDOFFS)
    log.warning(
        "loop guard: %d bot answers in %g min company=%s conversation=%s: handed to humans",
        calls,
        minutes,
        ctx.company_id,
        ctx.conversation,
    )
    note = (
        f"Loop guard: the bot answered this conversation {calls} times in {minutes:g} minutes"
        f" (LOOP_MAX_REPLIES={most}) — another bot's automatic replies, or a flood? It stays"
        " silent here until the conversation is handed back."
    )
    return BotReply((), handoff=True, note=note)


def off_duty(ctx: RunContext, segment: Segment) -> BotReply | None:
    """BOT_HOURS: outside the bot's hours (by Redis's clock) the batch is left to the
    humans, with AWAY_MESSAGE once per conversation while the business is closed."""
    config = ctx.company
    if not config.keeps_hours:
        return None
    now = redis_now(ctx.client)
    if config.bot_on_duty(now):
        return None
    ctx.count(Stat.OFF_DUTY_BATCHES)
    log.info(
        "bot off duty (BOT_HOURS=%s) company=%s conversation=%s",
        config.bot_hours,
        ctx.company_id,
        ctx.conversation,
    )
    if not config.away_message or config.is_business_open(now):
        return BotReply(())
    until = max(60, int(config.seconds_until_hours_change(now)))
    first = ctx.client.set(ctx.key(keys.away), "1", nx=True, ex=until)
    return BotReply((config.away_message,) if first else ())


def over_budget(ctx: RunContext, segment: Segment) -> BotReply | None:
    """The day's ceilings, by Redis's clock: BOT_SPEND_PER_DAY (what today's calls cost,
    priced by BOT_PRICES; a call is refused once the spend has reached it, so the call that
    crosses it completes) and BOT_CALLS_PER_DAY (this call taken from today's count).
    Past either, the conversation goes to humans with BUDGET_MESSAGE instead."""
    per_day, spend_per_day = ctx.company.bot_calls_per_day, ctx.company.bot_spend_per_day
    if not per_day and not spend_per_day:
        return None
    day = time.strftime("%Y-%m-%d", time.gmtime(redis_now(ctx.client)))
    if spend_per_day:
        spent = float(ctx.client.get(keys.bot_spend_day(ctx.company_id, day)) or 0)
        if spent >= spend_per_day:
            return _budget_spent(ctx, f"BOT_SPEND_PER_DAY={spend_per_day:g} reached ({spent:.4f})")
    if not per_day or ctx.scripts.housekeeping.spend_bot_call(ctx.company_id, day, per_day).run() is not None:
        return None
    return _budget_spent(ctx, f"BOT_CALLS_PER_DAY={per_day} used up")


def _budget_spent(ctx: RunContext, why: str) -> BotReply:
    ctx.count(Stat.BUDGET_HANDOFFS)
    log.warning("%s company=%s conversation=%s: handed to humans", why, ctx.company_id, ctx.conversation)
    message = ctx.company.budget_message
    return BotReply((message,) if message else (), handoff=True)


GATES: tuple[Gate, ...] = (opt_out, keyword_handoff, off_duty, loop_guard, over_budget)


def first_gate(ctx: RunContext, segment: Segment) -> BotReply | None:
    """The reply of the first gate that closes, or None: the bot is asked."""
    for gate in GATES:
        reply = gate(ctx, segment)
        if reply is not None:
            return reply
    return None
