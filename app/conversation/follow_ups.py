"""Follow-ups on silence (FOLLOW_UP_AFTER_MINUTES, e.g. ``30,240``): when the contact has
not answered the bot's last reply, a follow-up goes out at each mark — the matching
FOLLOW_UP_MESSAGES entry, or, with none, the bot asked again with ``"follow_up": n`` in
its request.

Scheduled in Redis like batches, never as countdown tasks: posting a bot answer
(``schedule``) writes the conversation's ladder (``<company>:webhook_follow_up:<conv>``:
the answer it follows, the stage, since when, by Redis's clock) and its next mark in
``<company>:webhook_follow_ups``; a worker's housekeeping (``send_due``) takes due
entries, each by one worker (ZREM). Everything lives in Redis, so a restart or a redeploy
changes nothing. A newer bot answer starts the ladder again from its own first mark.

At each mark the conversation is looked at again, whatever events arrived or were lost:
a contact message since (queued, in flight, or noted in the sessions), a human or the
bot's own handoff holding it, a pause label, an opt-out, a resolve (or a status the bot
does not answer), draft mode, or WhatsApp's closed 24-hour window each cancel the rest.
Outside BOT_HOURS a mark is skipped, the next one still waits. Each follow-up is sent
at most once (a marker set before it is posted: a crash in between loses it rather than
repeating it), as the gateway's own message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from app.bots import Bot, ask_bot, follow_up_request
from app.chatwoot.client import Replier
from app.chatwoot.replies import part_text, reply_parts
from app.conversation.own import post_own
from app.errors import BotError, ChatwootError
from app.metrics import Stat
from app.settings import CompanyConfig, Settings
from app.store import keys
from app.store.client import redis_now
from app.store.scripts import Scripts

__all__ = ["schedule", "send_due"]

log = logging.getLogger(__name__)
DUE_AT_ONCE = 50  # follow-ups taken per company per round
KEEP_SECONDS = 8 * 24 * 3600  # a ladder's state outlives its last mark


def schedule(
    client: redis.Redis,
    config: CompanyConfig,
    conversation: str,
    inbox: int | None,
    account: int,
    contact: dict[str, Any],
    answer: str,
) -> None:
    """The bot's answer ``answer`` was posted: the ladder starts again from its first mark."""
    marks = config.follow_up_after_minutes
    if not marks or config.drafts:
        return
    cid, since = config.company_id, redis_now(client)
    ladder = keys.follow_up(cid, conversation)
    state = {
        "answer": answer,
        "stage": 0,
        "since": f"{since:.3f}",
        "account": account,
        "inbox": inbox if inbox is not None else "",
        "contact": str(contact.get("id") or ""),
        "name": str(contact.get("name") or "")[:200],
    }
    pipe = client.pipeline(transaction=True)  # the ladder and its mark written together
    pipe.delete(ladder)
    pipe.hset(ladder, mapping=state)
    pipe.expire(ladder, KEEP_SECONDS)
    pipe.zadd(keys.follow_ups(cid), {conversation: since + marks[0] * 60})
    pipe.execute()


def send_due(
    client: redis.Redis,
    scripts: Scripts,
    settings: Settings,
    replier_for: Callable[[str], Replier],
    bot_for: Callable[[str, int | None], Bot],
) -> int:
    """Send (or cancel) the follow-ups due now; return how many went out."""
    sent = 0
    for company in settings.companies.values():
        now = redis_now(client)
        due = client.zrangebyscore(keys.follow_ups(company.company_id), "-inf", now, start=0, num=DUE_AT_ONCE)
        for conversation in due:
            if client.zrem(keys.follow_ups(company.company_id), conversation):  # this worker took it
                sent += _follow_up(client, scripts, company, conversation, now, replier_for, bot_for)
    return sent


def _follow_up(
    client: redis.Redis,
    scripts: Scripts,
    company: CompanyConfig,
    conversation: str,
    now: float,
    replier_for: Callable[[str], Replier],
    bot_for: Callable[[str, int | None], Bot],
) -> int:
    cid = company.company_id
    ladder = keys.follow_up(cid, conversation)
    state = client.hgetall(ladder)
    if not state:
        return 0
    inbox = int(state["inbox"]) if state.get("inbox", "").isdigit() else None
    config, stage, since = company.for_inbox(inbox), int(state["stage"]), float(state["since"])
    why = _cancelled(client, config, conversation, state, since, now)
    advance = scripts.housekeeping.advance_follow_up  # only the ladder of the answer read here
    if why:
        advance(cid, conversation, state["answer"], None, 0).run()
        client.hincrby(keys.stats(cid), Stat.FOLLOW_UPS_CANCELLED, 1)
        log.info("follow-ups cancelled company=%s conversation=%s: %s", cid, conversation, why)
        return 0
    sent = 0
    if config.keeps_hours and not config.bot_on_duty(now):
        log.info("follow-up %d skipped company=%s conversation=%s: BOT_HOURS", stage + 1, cid, conversation)
    elif client.set(
        keys.follow_up_sent(cid, conversation, state["answer"], stage), "1", nx=True, ex=KEEP_SECONDS
    ):
        sent = _send(client, config, conversation, inbox, state, stage, replier_for, bot_for)
    marks = config.follow_up_after_minutes
    if stage + 1 < len(marks):
        advance(cid, conversation, state["answer"], stage + 1, since + marks[stage + 1] * 60).run()
    else:
        advance(cid, conversation, state["answer"], None, 0).run()
    return sent


def _cancelled(
    client: redis.Redis,
    config: CompanyConfig,
    conversation: str,
    state: dict[str, str],
    since: float,
    now: float,
) -> str:
    """Why the rest of the ladder is off, or ''."""
    cid = config.company_id
    pipe = client.pipeline(transaction=False)
    pipe.exists(keys.handoff(cid, conversation), keys.paused(cid, conversation))
    pipe.exists(keys.queue(cid, conversation), keys.processing(cid, conversation))  # the contact's, waiting
    pipe.zscore(keys.sessions(cid), conversation)
    pipe.get(keys.status(cid, conversation))
    pipe.sismember(keys.opted_out(cid), state.get("contact") or "-")
    pipe.get(keys.contact_wrote(cid, conversation))
    held, busy, wrote_at, status, opted, window = pipe.execute()
    if config.drafts:
        return "BOT_MODE=draft"
    if held:
        return "a human (or the bot's handoff) holds the conversation, or a pause label"
    if busy or (wrote_at is not None and float(wrote_at) > since):
        return "the contact wrote"
    if status == "resolved" or (status and status != "pending" and config.answers_only_pending):
        return f"the conversation is {status}"
    if opted:
        return "the contact opted out"
    if window is not None and now - float(window) > config.service_window_hours * 3600:
        return "WhatsApp's 24-hour window is closed"
    return ""


def _send(
    client: redis.Redis,
    config: CompanyConfig,
    conversation: str,
    inbox: int | None,
    state: dict[str, str],
    stage: int,
    replier_for: Callable[[str], Replier],
    bot_for: Callable[[str, int | None], Bot],
) -> int:
    cid, account = config.company_id, int(state["account"])
    messages = config.follow_up_messages
    if messages:
        texts = [messages[min(stage, len(messages) - 1)]]
    else:
        contact = {"id": state.get("contact"), "name": state.get("name")}
        request = follow_up_request(cid, account, conversation, inbox, contact, stage + 1)
        try:
            reply = ask_bot(bot_for(cid, inbox), request, config.bot_timeout_seconds)
        except BotError as exc:
            log.warning(
                "follow-up not asked of the bot company=%s conversation=%s: %s", cid, conversation, exc
            )
            return 0
        texts = [part_text(p) for p in reply_parts(reply.replies, "none") if part_text(p).strip()]
    try:
        for text in texts:
            post_own(client, replier_for(cid), cid, account, conversation, text)
    except ChatwootError as exc:
        log.warning("follow-up not sent company=%s conversation=%s error=%s", cid, conversation, exc)
        return 0
    client.hincrby(keys.stats(cid), Stat.FOLLOW_UPS_SENT, 1)
    log.info("follow-up %d sent company=%s conversation=%s", stage + 1, cid, conversation)
    return 1 if texts else 0
