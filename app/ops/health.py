"""/healthz (process alive), /readyz (Redis, with room to write, and a fresh worker), /metrics."""

from __future__ import annotations

import hmac
import logging
import time

import redis
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from app.logs import Sampled
from app.metrics import STAT_HELP, Stat, redis_histograms, web_metrics_text
from app.settings import Settings
from app.store import keys
from app.store.client import MB, Memory, memory, redis_now

__all__ = ["bp", "live_workers", "stuck_workers"]

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)
_stuck_lines = Sampled(log)  # probes ask every few seconds: a line a minute is enough

# stats hash field -> (metric name, help), from the one declaration (app.metrics.Stat).
COUNTERS = {c.value: (f"gateway_{c.value}", STAT_HELP[c]) for c in Stat}


def live_workers(client: redis.Redis, max_age: float) -> int:
    """Workers whose heartbeat (written with Redis's clock) is younger than ``max_age``."""
    return int(client.zcount(keys.worker_heartbeats(), redis_now(client) - max_age, "+inf"))


def stuck_workers(client: redis.Redis, max_age: float) -> list[str]:
    """Workers that reported, within ``max_age``, a run stuck past RUN_MAX_SECONDS."""
    return list(client.zrangebyscore(keys.workers_stuck(), redis_now(client) - max_age, "+inf"))


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")


def _spooling(gateway) -> str:  # type: ignore[no-untyped-def]
    spooled, files = gateway.spool.backlog(), len(gateway.spool.waiting_files())
    if not spooled and not files:
        return ""
    return f"spooling: {spooled} webhook event(s) of this process in the local spool ({files} spool file(s))"


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    gateway = current_app.extensions["gateway"]
    spooling = _spooling(gateway)
    try:
        gateway.redis.ping()
        workers = live_workers(gateway.redis, gateway.settings.worker_heartbeat_max_age_seconds)
        stuck = stuck_workers(gateway.redis, gateway.settings.worker_heartbeat_max_age_seconds)
        room = memory(gateway.redis)
    except redis.RedisError as exc:
        reason = f"Redis unreachable: {type(exc).__name__}" + (f"; {spooling}" if spooling else "")
        return jsonify(status="unavailable", reason=reason), 503
    if room.full:
        return jsonify(status="unavailable", reason=_ceiling_reason(room, spooling)), 503
    if workers == 0:
        return jsonify(status="unavailable", reason="no worker heartbeat in the last seconds"), 503
    if stuck:
        # The count, not the names: a worker's name is its host's, and the one Flower's
        # control API takes; /readyz is public (review 2026-12-03, finding 10). The
        # worker's own log and the status page name it.
        _stuck_lines.log(
            logging.ERROR, "stuck", "readyz: worker(s) %s stuck past RUN_MAX_SECONDS", ", ".join(stuck)
        )
        reason = (
            f"{len(stuck)} worker(s) with a run stuck past"
            f" RUN_MAX_SECONDS={gateway.settings.run_max_seconds:g} (named in the log and on /status)"
        )
        return jsonify(status="unavailable", reason=reason, stuck=len(stuck)), 503
    if spooling:  # Redis is back; the spool is being moved in
        return jsonify(status="degraded", reason=spooling, workers=workers)
    return jsonify(status="ready", workers=workers)


def _ceiling_reason(room: Memory, spooling: str) -> str:
    return (
        f"Redis is at its memory ceiling ({room.used / MB:.1f} of {room.ceiling / MB:.1f} MB, maxmemory"
        " with noeviction): it refuses new messages (they wait in the local spool) and the workers"
        " cannot claim batches; free room with `python -m app busiest` and `purge`, or raise the"
        " ceiling (EMBEDDED_REDIS_MAXMEMORY for the embedded Redis)" + (f"; {spooling}" if spooling else "")
    )


class RedisCollector:
    """Reads the shared counters and the queue's gauges from Redis at scrape time: a
    few commands per company, never one per conversation (the worker sums those,
    ``app.ops.queries.refresh_gauges``)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings

    def collect(self):  # type: ignore[no-untyped-def]
        counters = {f: CounterMetricFamily(n, h, labels=["company"]) for f, (n, h) in COUNTERS.items()}
        waiting = GaugeMetricFamily(
            "gateway_messages_waiting", "Messages queued or in flight", labels=["company"]
        )
        leases = GaugeMetricFamily(
            "gateway_live_leases", "Conversations with a live lease", labels=["company"]
        )
        dead = GaugeMetricFamily(
            "gateway_dead_letters_waiting", "Entries in the dead-letter list", labels=["company"]
        )
        oldest = GaugeMetricFamily(
            "gateway_oldest_message_age_seconds",
            "Age of the oldest waiting or in-flight message",
            labels=["company"],
        )
        slots = GaugeMetricFamily(
            "gateway_conversations_waiting_for_a_slot",
            "Conversations whose batch is due but not taken: every worker slot is busy (or no worker runs)",
            labels=["company"],
        )
        slot_wait = GaugeMetricFamily(
            "gateway_slot_wait_seconds",
            "How long the earliest of those has waited for a free slot",
            labels=["company"],
        )
        age = GaugeMetricFamily(
            "gateway_gauges_age_seconds",
            "How long ago the worker last summed the conversations into the gauges above",
            labels=["company"],
        )
        calls = GaugeMetricFamily(
            "gateway_bot_calls_today",
            "Bot calls made today (UTC), counted when BOT_CALLS_PER_DAY is set",
            labels=["company"],
        )
        ceiling = GaugeMetricFamily(
            "gateway_bot_calls_per_day", "BOT_CALLS_PER_DAY, the spend ceiling", labels=["company"]
        )
        opted = GaugeMetricFamily(
            "gateway_contacts_opted_out",
            "Contacts that sent one of OPT_OUT_KEYWORDS and no OPT_IN_KEYWORDS since",
            labels=["company"],
        )
        models = CounterMetricFamily(
            "gateway_bot_answers",
            "Bot answers by the model that gave them (counted while OPENAI_FALLBACK_BASE_URL is set)",
            labels=["company", "model"],
        )
        cost = CounterMetricFamily(
            "gateway_bot_cost",
            "What the openai backend's calls cost, priced by BOT_PRICES (in their currency)",
            labels=["company", "model"],
        )
        tokens = CounterMetricFamily(
            "gateway_bot_tokens",
            "Tokens of the openai backend's calls (each answer's usage): kind input or output",
            labels=["company", "model", "kind"],
        )
        spent = GaugeMetricFamily(
            "gateway_bot_spend_today",
            "What today's (UTC) bot calls cost, priced by BOT_PRICES",
            labels=["company"],
        )
        spend_ceiling = GaugeMetricFamily(
            "gateway_bot_spend_per_day", "BOT_SPEND_PER_DAY, the money ceiling", labels=["company"]
        )
        now = redis_now(self._redis)
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        for company, config in self._settings.companies.items():
            if config.bot_calls_per_day:
                calls.add_metric([company], float(self._redis.get(keys.bot_calls_day(company, day)) or 0))
                ceiling.add_metric([company], float(config.bot_calls_per_day))
            stats = self._redis.hgetall(keys.stats(company))
            for field, family in counters.items():
                family.add_metric([company], float(stats.get(field, 0)))
            summed = self._redis.hgetall(keys.gauges(company))
            if summed:  # none until a worker's first gauges pass
                waiting.add_metric([company], float(summed.get("waiting", 0)))
                leases.add_metric([company], float(summed.get("live_leases", 0)))
                oldest.add_metric([company], max(0.0, float(summed.get("oldest_age_seconds", 0))))
                slots.add_metric([company], float(summed.get("waiting_for_slot", 0)))
                slot_wait.add_metric([company], max(0.0, float(summed.get("slot_wait_seconds", 0))))
                age.add_metric([company], max(0.0, now - float(summed.get("at", now))))
            dead.add_metric([company], self._redis.llen(keys.dead_letters(company)))
            for model, answers in self._redis.hgetall(keys.bot_models(company)).items():
                models.add_metric([company, model[:100]], float(answers))
            if config.opt_out_keywords:
                opted.add_metric([company], self._redis.scard(keys.opted_out(company)))
            for field, value in self._redis.hgetall(keys.bot_usage(company)).items():
                model, _, kind = field.rpartition(":")
                if kind == "cost":
                    cost.add_metric([company, model[:100]], float(value))
                elif kind in ("input", "output"):
                    tokens.add_metric([company, model[:100], kind], float(value))
            if config.bot_prices or config.bot_spend_per_day:
                spent.add_metric([company], float(self._redis.get(keys.bot_spend_day(company, day)) or 0))
            if config.bot_spend_per_day:
                spend_ceiling.add_metric([company], config.bot_spend_per_day)
        workers = GaugeMetricFamily("gateway_workers_alive", "Workers with a fresh heartbeat")
        workers.add_metric([], live_workers(self._redis, self._settings.worker_heartbeat_max_age_seconds))
        room = memory(self._redis)
        used = GaugeMetricFamily(
            "gateway_redis_used_memory_bytes", "Redis's memory as counted against its maxmemory"
        )
        used.add_metric([], float(room.used))
        limit = GaugeMetricFamily(
            "gateway_redis_maxmemory_bytes", "Redis's maxmemory (0: none); at it, writes are refused"
        )
        limit.add_metric([], float(room.ceiling))
        yield from counters.values()
        yield from (
            waiting,
            leases,
            dead,
            oldest,
            slots,
            slot_wait,
            age,
            workers,
            calls,
            ceiling,
            models,
            cost,
            tokens,
            spent,
            spend_ceiling,
            opted,
            used,
            limit,
        )
        yield from redis_histograms(self._redis, self._settings.companies)


def _metrics_allowed(token: str | None) -> bool:
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@bp.get("/metrics")
def metrics():  # type: ignore[no-untyped-def]
    gateway = current_app.extensions["gateway"]
    if not _metrics_allowed(gateway.settings.metrics_token):
        response = jsonify(
            error="unauthorized", reason="METRICS_TOKEN is set: send Authorization: Bearer <token>"
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response, 401
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(gateway.redis, gateway.settings))
    try:
        text = generate_latest(registry)
    except redis.RedisError as exc:
        # The web's own figures (the spooled events among them) without the Redis ones.
        note = f"# Redis unreachable: {type(exc).__name__}; only this web's figures\n".encode()
        return Response(note + web_metrics_text(), mimetype="text/plain; version=0.0.4")
    return Response(web_metrics_text() + text, mimetype="text/plain; version=0.0.4")
