"""Metrics: what /metrics reports, and where each figure lives.

* Web figures (answers by status, webhook latency) are prometheus-client
  metrics of the web process; with ``PROMETHEUS_MULTIPROC_DIR`` set (start.sh
  sets it) every gunicorn worker writes them to that directory and /metrics
  sums them.
* Worker figures (batch sizes, bot latency) and per-company counters live in
  Redis, so they are reported whichever container the worker runs in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from enum import StrEnum

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import Histogram as WebHistogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from app.store import keys

__all__ = [
    "HISTOGRAMS",
    "SPOOLED",
    "STAT_HELP",
    "WEBHOOKS_REFUSED",
    "WEB_REGISTRY",
    "Histogram",
    "Stat",
    "observe",
    "redis_histograms",
    "render_counters",
    "web_metrics_text",
]


class Stat(StrEnum):
    """Every counter of ``<company>:webhook_stats``, declared once. Python writes
    ``Stat.X``; the Lua scripts name them ``@x@`` (``render_counters``); /metrics
    reports each as ``gateway_<name>_total``."""

    WEBHOOKS_QUEUED = "webhooks_queued"
    WEBHOOKS_DUPLICATE = "webhooks_duplicate"
    WEBHOOKS_IGNORED = "webhooks_ignored"
    WEBHOOKS_REJECTED_429 = "webhooks_rejected_429"
    WEBHOOKS_REJECTED_BUSY = "webhooks_rejected_busy"
    SPOOLED_OVER_CAP = "spooled_over_cap"
    MESSAGES_UPDATED = "messages_updated"
    BATCHES = "batches"
    BOT_CALLS = "bot_calls"
    BOT_FAILURES = "bot_failures"
    REPLIES_SENT = "replies_sent"
    REPLIES_FAILED = "replies_failed"
    REPLIES_RECOVERED = "replies_recovered"
    FALLBACKS_SENT = "fallbacks_sent"
    HANDOFFS = "handoffs"
    AGENT_TAKEOVERS = "agent_takeovers"
    TAKEOVERS_ENDED = "takeovers_ended"
    SUPERSEDED_RUNS = "superseded_runs"
    SESSIONS_EXPIRED = "sessions_expired"
    LEASE_TAKEOVERS = "lease_takeovers"
    SWEEPER_RESCUES = "sweeper_rescues"
    DEAD_LETTERS = "dead_letters"
    DEAD_LETTERS_DROPPED = "dead_letters_dropped"
    BATCH_FAILURES = "batch_failures"
    BUDGET_HANDOFFS = "budget_handoffs"
    LOOP_HANDOFFS = "loop_handoffs"
    OPT_OUTS = "opt_outs"
    OFF_DUTY_BATCHES = "off_duty_batches"
    TRANSCRIPTIONS_FAILED = "transcriptions_failed"
    REPLY_MEDIA_FAILED = "reply_media_failed"
    DOCUMENTS_UNREAD = "documents_unread"
    SERVICE_WINDOW_CLOSED = "service_window_closed"
    FOLLOW_UPS_SENT = "follow_ups_sent"
    FOLLOW_UPS_CANCELLED = "follow_ups_cancelled"


STAT_HELP: dict[Stat, str] = {
    Stat.WEBHOOKS_QUEUED: "Messages accepted into a conversation queue",
    Stat.WEBHOOKS_DUPLICATE: "Redeliveries and re-sent messages ignored",
    Stat.WEBHOOKS_IGNORED: "Events and messages not for the bot",
    Stat.WEBHOOKS_REJECTED_429: "Messages refused: conversation queue full",
    Stat.WEBHOOKS_REJECTED_BUSY: (
        "Messages of another conversation refused (429): the company already has"
        " MAX_CONVERSATIONS_WAITING conversations holding waiting or in-flight messages"
    ),
    Stat.MESSAGES_UPDATED: (
        "Messages changed while they waited in their batch (message_updated: an edit, Chatwoot's"
        " transcript of a voice note, a deletion)"
    ),
    Stat.SPOOLED_OVER_CAP: (
        "Messages moved in from the local spool beyond MAX_QUEUE_PER_CONVERSATION:"
        " answered 202 already, so queued all the same"
    ),
    Stat.BATCHES: "Batches claimed by a drainer",
    Stat.BOT_CALLS: "Calls made to the bot",
    Stat.BOT_FAILURES: "Bot calls that failed past their retries",
    Stat.REPLIES_SENT: "Reply parts posted to Chatwoot",
    Stat.REPLIES_FAILED: "Reply posts that failed past their retries",
    Stat.REPLIES_RECOVERED: "Replies found already posted after a crash (read-back)",
    Stat.FALLBACKS_SENT: "Fallback messages sent after a bot failure",
    Stat.HANDOFFS: "Conversations handed to humans by the bot",
    Stat.AGENT_TAKEOVERS: "Conversations silenced by a human agent's reply",
    Stat.TAKEOVERS_ENDED: "Takeovers and handoffs ended by a status change to pending or resolved",
    Stat.SUPERSEDED_RUNS: "Bot answers not posted: newer fragments arrived",
    Stat.SESSIONS_EXPIRED: "Bot sessions cleared after SESSION_IDLE_MINUTES",
    Stat.LEASE_TAKEOVERS: "Leases taken from finished holders",
    Stat.SWEEPER_RESCUES: "Conversations rescheduled by the sweeper",
    Stat.DEAD_LETTERS: "Batches moved to the dead-letter list",
    Stat.DEAD_LETTERS_DROPPED: "Oldest dead letters dropped because the list held DEAD_LETTER_MAX entries",
    Stat.BATCH_FAILURES: "Runs that failed while handling a batch (an attempt)",
    Stat.BUDGET_HANDOFFS: "Conversations handed to humans because BOT_CALLS_PER_DAY was used up",
    Stat.LOOP_HANDOFFS: "Conversations handed to humans by the loop guard (LOOP_MAX_REPLIES)",
    Stat.OPT_OUTS: "Contacts that opted out of the bot (OPT_OUT_KEYWORDS)",
    Stat.OFF_DUTY_BATCHES: "Batches left to humans because BOT_HOURS kept the bot silent",
    Stat.TRANSCRIPTIONS_FAILED: "Voice notes that reached the bot without a transcript",
    Stat.FOLLOW_UPS_SENT: "Follow-ups sent to contacts who did not answer the bot (FOLLOW_UP_AFTER_MINUTES)",
    Stat.FOLLOW_UPS_CANCELLED: "Follow-up ladders cancelled (the contact wrote, a human, a resolve, …)",
    Stat.SERVICE_WINDOW_CLOSED: "Answers that met WhatsApp's closed 24-hour window (a template or a handoff)",
    Stat.DOCUMENTS_UNREAD: "Documents that reached the bot without their text (not a PDF, unreadable)",
    Stat.REPLY_MEDIA_FAILED: "Media of bot replies that could not be fetched (sent as links instead)",
}

_COUNTER_TOKEN = re.compile(r"@([a-z0-9_]+)@")


def render_counters(script: str) -> str:
    """A Lua script with each ``@name@`` replaced by that counter's field, quoted; a
    name that is not a declared ``Counter`` stops the import."""

    def field(match: re.Match[str]) -> str:
        return f"'{Stat(match.group(1)).value}'"

    return _COUNTER_TOKEN.sub(field, script)


WEB_REGISTRY = CollectorRegistry()
WEBHOOK_RESPONSES = Counter(
    "gateway_webhook_responses", "Webhook answers by HTTP status", ["status"], registry=WEB_REGISTRY
)
WEBHOOKS_REFUSED = Counter(
    "gateway_webhooks_refused",
    "Webhooks refused before anything was read: unknown company, or why authentication failed",
    ["reason"],
    registry=WEB_REGISTRY,
)
STATUS_AUTH_FAILURES = Counter(
    "gateway_status_auth_failures",
    "Logins to /status refused: wrong credentials, or too many failures in the minute (throttled)",
    ["reason"],
    registry=WEB_REGISTRY,
)
WEBHOOK_LATENCY = WebHistogram(
    "gateway_webhook_latency_seconds",
    "Time to answer a webhook",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=WEB_REGISTRY,
)

SPOOLED = Gauge(
    "gateway_spooled_messages",
    "Webhook events kept in the local spool while Redis was unreachable, not yet moved into Redis",
    registry=WEB_REGISTRY,
    multiprocess_mode="livesum",
)


class Histogram(StrEnum):
    """The histograms the workers keep in ``<company>:webhook_histograms`` (summed across
    workers there, reported by /metrics)."""

    BATCH_SIZE = "gateway_batch_size_messages"
    BOT_LATENCY = "gateway_bot_latency_seconds"


# name -> (help, bucket upper bounds)
HISTOGRAMS: dict[Histogram, tuple[str, tuple[float, ...]]] = {
    Histogram.BATCH_SIZE: ("Messages per claimed batch", (1, 2, 3, 5, 8, 13, 21, 50)),
    Histogram.BOT_LATENCY: ("Time the bot took to answer", (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)),
}


def count_into(pipe: redis.client.Pipeline, company: str, name: Histogram, value: float) -> None:
    """Add the commands counting ``value`` into the Redis histogram ``name`` to ``pipe``."""
    bounds = HISTOGRAMS[name][1]
    bucket = next((floatToGoString(b) for b in bounds if value <= b), "+Inf")
    pipe.hincrby(keys.histograms(company), f"{name}:{bucket}", 1)
    pipe.hincrbyfloat(keys.histograms(company), f"{name}:sum", value)


def observe(client: redis.Redis, company: str, name: Histogram, value: float) -> None:
    """Count ``value`` into the Redis histogram ``name`` (one round trip)."""
    pipe = client.pipeline(transaction=False)
    count_into(pipe, company, name, value)
    pipe.execute()


def redis_histograms(client: redis.Redis, companies: Iterable[str]) -> list[HistogramMetricFamily]:
    families = []
    for name, (help_text, bounds) in HISTOGRAMS.items():
        family = HistogramMetricFamily(name, help_text, labels=["company"])
        for company in companies:
            stored = client.hgetall(keys.histograms(company))
            running, buckets = 0.0, []
            for bound in [*(floatToGoString(b) for b in bounds), "+Inf"]:
                running += float(stored.get(f"{name}:{bound}", 0))
                buckets.append((bound, running))
            family.add_metric([company], buckets, float(stored.get(f"{name}:sum", 0)))
        families.append(family)
    return families


def web_metrics_text() -> bytes:
    """The web figures of every gunicorn worker (or of this process alone)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(WEB_REGISTRY)
