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
from collections.abc import Iterable

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import floatToGoString

from app import keys

__all__ = ["HISTOGRAMS", "SPOOLED", "WEB_REGISTRY", "observe", "redis_histograms", "web_metrics_text"]

WEB_REGISTRY = CollectorRegistry()
WEBHOOK_RESPONSES = Counter(
    "gateway_webhook_responses", "Webhook answers by HTTP status", ["status"], registry=WEB_REGISTRY
)
WEBHOOK_LATENCY = Histogram(
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

# name -> (help, bucket upper bounds); stored in <company>:webhook_histograms.
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "gateway_batch_size_messages": ("Messages per claimed batch", (1, 2, 3, 5, 8, 13, 21, 50)),
    "gateway_bot_latency_seconds": ("Time the bot took to answer", (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)),
}


def count_into(pipe: redis.client.Pipeline, company: str, name: str, value: float) -> None:
    """Add the commands counting ``value`` into the Redis histogram ``name`` to ``pipe``."""
    bounds = HISTOGRAMS[name][1]
    bucket = next((floatToGoString(b) for b in bounds if value <= b), "+Inf")
    pipe.hincrby(keys.histograms(company), f"{name}:{bucket}", 1)
    pipe.hincrbyfloat(keys.histograms(company), f"{name}:sum", value)


def observe(client: redis.Redis, company: str, name: str, value: float) -> None:
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
