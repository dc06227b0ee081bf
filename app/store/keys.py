"""Every Redis key name the gateway uses, in one place.

Lua scripts never build key names: they receive them in KEYS from here, so a
prefix change is one edit and a test (tests/unit/store/test_keys.py) pins each format.
"""

from __future__ import annotations

__all__ = [
    "LEDGER_ATTEMPTS",
    "LEDGER_ERROR",
    "LEDGER_RUN",
    "assignee",
    "away",
    "bot_calls_day",
    "bot_history",
    "bot_models",
    "bot_spend_day",
    "bot_usage",
    "contact_wrote",
    "conversation_index",
    "counter_history",
    "dead_letters",
    "due",
    "follow_up",
    "follow_up_sent",
    "follow_ups",
    "fragment_log",
    "gap_histogram",
    "gauges",
    "handoff",
    "histograms",
    "last_fragment",
    "lease",
    "ledger",
    "opted_out",
    "outbox",
    "own_pending",
    "own_reply",
    "pace",
    "paused",
    "processing",
    "queue",
    "recent_bot_calls",
    "seen_delivery",
    "seen_message",
    "session_accounts",
    "sessions",
    "stats",
    "status",
    "status_failures",
    "status_secret",
    "turns",
    "worker_heartbeats",
    "workers_stuck",
]


def queue(company: str, conversation: str | int) -> str:
    """List of messages waiting for the bot (RPUSH by the webhook, FIFO)."""
    return f"{company}:webhook_queue:{conversation}"


def lease(company: str, conversation: str | int) -> str:
    """The lease: the id of the one run (or published task) allowed to drain this conversation."""
    return f"{company}:webhook_active_task:{conversation}"


def processing(company: str, conversation: str | int) -> str:
    """The batch being handled; emptied only after its reply was sent."""
    return f"{company}:webhook_processing:{conversation}"


def seen_message(company: str, message_id: str | int) -> str:
    """De-duplication marker of one Chatwoot message id."""
    return f"{company}:webhook_seen:{message_id}"


def seen_delivery(company: str, delivery_id: str) -> str:
    """De-duplication marker of one webhook delivery (X-Chatwoot-Delivery)."""
    return f"{company}:webhook_seen:delivery:{delivery_id}"


def due(company: str) -> str:
    """Sorted set: conversation -> when its batch is due (Redis's clock); the dispatcher
    claims due entries and publishes one drain task each."""
    return f"{company}:webhook_due"


def dead_letters(company: str) -> str:
    """Messages that failed past their retries, with the error; replayable."""
    return f"{company}:webhook_dead"


def conversation_index(company: str) -> str:
    """Set of conversations that may hold queued or in-flight messages (sweeper)."""
    return f"{company}:webhook_conversations"


def ledger(company: str, conversation: str | int) -> str:
    """Hash: the reply ledger of the batch in processing (``app.drain.ledger``): the bot's
    stored answers, which message each covers, each reply part's state, the attempts."""
    return f"{company}:webhook_ledger:{conversation}"


# Fields of the ledger hash that CLAIM_BATCH, NOTE_ERROR, RELEASE_ATTEMPT and COMPLETE
# write (the rest of its layout: ``app.drain.ledger``); ``run:<run id>`` marks the runs whose
# attempt is counted.
LEDGER_ATTEMPTS, LEDGER_ERROR, LEDGER_RUN = "attempts", "error", "run:"


def handoff(company: str, conversation: str | int) -> str:
    """Present while a human holds the conversation: the bot stays silent."""
    return f"{company}:webhook_handoff:{conversation}"


def away(company: str, conversation: str | int) -> str:
    """String + TTL until the business next opens: AWAY_MESSAGE went to this conversation."""
    return f"{company}:webhook_away:{conversation}"


def paused(company: str, conversation: str | int) -> str:
    """String + TTL: the conversation carries one of ``PAUSE_LABELS``; the bot is silent
    until a webhook shows it without (its queued messages are left to humans)."""
    return f"{company}:webhook_paused:{conversation}"


def assignee(company: str, conversation: str | int) -> str:
    """String + TTL: who the conversation was assigned to as the gateway last saw it
    (``app.conversation.ownership.assignee_of``), to tell an assignment *change* from an assignee
    merely shown again."""
    return f"{company}:webhook_assignee:{conversation}"


def status(company: str, conversation: str | int) -> str:
    """String + TTL: the conversation's status as the gateway last saw it, to tell a status
    *change* (which ends a human takeover) from a status merely repeated."""
    return f"{company}:webhook_status:{conversation}"


def own_reply(company: str, message_id: str | int) -> str:
    """Marks a message id the gateway itself created (its webhook is not an agent takeover)."""
    return f"{company}:webhook_own:{message_id}"


def own_pending(company: str, conversation: str | int) -> str:
    """Set of digests of replies being posted right now (their webhook may beat the POST's answer)."""
    return f"{company}:webhook_own_pending:{conversation}"


def sessions(company: str) -> str:
    """Sorted set: conversation -> time of its latest incoming message (session expiry)."""
    return f"{company}:webhook_sessions"


def session_accounts(company: str) -> str:
    """Hash: conversation -> Chatwoot account id (to post the session-expired message)."""
    return f"{company}:webhook_session_accounts"


def bot_history(company: str, conversation: str | int) -> str:
    """Recent turns kept for the openai backend, expiring with the session."""
    return f"{company}:bot_history:{conversation}"


def outbox(company: str) -> str:
    """Dry-run outbox: replies kept instead of sent when no Chatwoot URL is set."""
    return f"{company}:webhook_outbox"


def stats(company: str) -> str:
    """Hash of counters shared by web and worker processes (for /metrics)."""
    return f"{company}:webhook_stats"


def opted_out(company: str) -> str:
    """Set: the Chatwoot contact ids that sent one of OPT_OUT_KEYWORDS (and no
    OPT_IN_KEYWORDS since): the bot answers them in no conversation."""
    return f"{company}:webhook_opted_out"


def recent_bot_calls(company: str, conversation: str | int) -> str:
    """Sorted set + TTL: the conversation's bot calls within LOOP_WINDOW_MINUTES, scored
    by Redis's clock (the loop guard, LOOP_MAX_REPLIES)."""
    return f"{company}:webhook_recent_bot_calls:{conversation}"


def bot_models(company: str) -> str:
    """Hash: model -> bot answers it gave, counted while OPENAI_FALLBACK_BASE_URL is set
    (which of the two models answers)."""
    return f"{company}:webhook_bot_models"


def follow_ups(company: str) -> str:
    """Sorted set: conversation -> when its next follow-up is due (Redis's clock)."""
    return f"{company}:webhook_follow_ups"


def follow_up(company: str, conversation: str | int) -> str:
    """Hash + TTL: a conversation's follow-up ladder — the bot answer it follows, the
    stage, since when, the account, inbox and contact (app.conversation.follow_ups)."""
    return f"{company}:webhook_follow_up:{conversation}"


def follow_up_sent(company: str, conversation: str | int, answer: str, stage: int) -> str:
    """String + TTL: one follow-up of one answer was sent (or is being): never twice."""
    return f"{company}:webhook_follow_up_sent:{conversation}:{answer}:{stage}"


def contact_wrote(company: str, conversation: str | int) -> str:
    """String + 30-day TTL: when the contact of a WhatsApp conversation last wrote (Redis's
    clock), written by ENQUEUE; past SERVICE_WINDOW_HOURS (24) WhatsApp delivers only
    templates there. Absent: not a WhatsApp conversation (or the window is off)."""
    return f"{company}:webhook_contact_wrote:{conversation}"


def bot_usage(company: str) -> str:
    """Hash: ``<model>:cost`` (in BOT_PRICES' currency), ``<model>:input`` and
    ``<model>:output`` (tokens) -> totals of the openai backend's calls, read from each
    answer's ``usage`` (``gateway_bot_cost_total``, ``gateway_bot_tokens_total``)."""
    return f"{company}:webhook_bot_usage"


def bot_spend_day(company: str, day: str) -> str:
    """Float + 2-day TTL: what the bot's calls cost on one UTC day (by Redis's clock), in
    BOT_PRICES' currency; the money ceiling's count (BOT_SPEND_PER_DAY)."""
    return f"{company}:webhook_bot_spend:{day}"


def bot_calls_day(company: str, day: str) -> str:
    """Integer + 2-day TTL: bot calls of one UTC day (``YYYY-MM-DD``, by Redis's clock),
    the spend ceiling's count (BOT_CALLS_PER_DAY)."""
    return f"{company}:webhook_bot_calls:{day}"


def counter_history(company: str) -> str:
    """List, newest first: ``{"at": t, "replies_sent": n, "replies_failed": n}`` snapshots
    the gauges pass takes, about two hours' worth, so the status page can say "in the
    last hour" from counters that only ever grow."""
    return f"{company}:webhook_counter_history"


def gauges(company: str) -> str:
    """Hash: the queue's state summed over every conversation (``waiting``,
    ``live_leases``, ``oldest_age_seconds``, ``at``), refreshed by the worker
    (``gateway.gauges``) so that a scrape of /metrics reads one hash per company."""
    return f"{company}:webhook_gauges"


def histograms(company: str) -> str:
    """Hash of histogram buckets written by workers (batch size, bot latency)."""
    return f"{company}:webhook_histograms"


def gap_histogram(company: str) -> str:
    """Hash: bucket upper bound (s) -> count of gaps between consecutive fragments."""
    return f"{company}:webhook_gaps"


def last_fragment(company: str) -> str:
    """Hash: conversation -> arrival time of the latest fragment a drainer claimed."""
    return f"{company}:webhook_last_fragment"


def turns(company: str) -> str:
    """Hash: conversation -> when an outgoing message last went to the contact (the
    gateway's answer, an agent's reply; Redis's clock): a gap across it is a turn, never
    a fragment gap (``app.batching.pace``)."""
    return f"{company}:webhook_turns"


def fragment_log(company: str) -> str:
    """List, capped: the company's latest claimed fragments as ``<contact> <arrival>
    <reading>`` (never their text), replayed by ``python -m app analytics``."""
    return f"{company}:webhook_fragments"


def pace(company: str, contact: str) -> str:
    """String + TTL: how one contact types (``app.batching.pace.Pace``), for the learned and smart windows."""
    return f"{company}:webhook_pace:{contact}"


def worker_heartbeats() -> str:
    """Sorted set: worker name -> unix time of its latest heartbeat."""
    return "gateway:worker_heartbeats"


def workers_stuck() -> str:
    """Sorted set: worker name -> unix time it last reported a run past RUN_MAX_SECONDS."""
    return "gateway:workers_stuck"


def status_secret() -> str:
    """String: the random secret the status page's replay tokens are derived from."""
    return "gateway:status_secret"


def status_failures(client: str = "") -> str:
    """String + TTL: failed status-page logins in the current minute, of one client
    address, or of all (``client`` empty)."""
    return f"gateway:status_failures:{client}" if client else "gateway:status_failures"
