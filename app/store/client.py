"""Redis connections: made once per process from the settings and passed in."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

__all__ = ["MB", "Memory", "check", "connect", "fitness", "memory", "redis_now", "trouble", "wait_for_room"]

log = logging.getLogger(__name__)
MB = 1024 * 1024


def connect(url: str) -> redis.Redis:
    """A client with bounded timeouts, so an outage fails fast instead of hanging."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=3,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def redis_now(client: redis.Redis) -> float:
    """Redis's clock (TIME): the one clock of arrival times, due times and heartbeats,
    whatever the web's and the workers' clocks say."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


@dataclass(frozen=True)
class Memory:
    """Redis's memory against its ceiling (``maxmemory``; 0: none). With ``noeviction``
    (the only policy the gateway accepts) a Redis at its ceiling refuses every command
    that may grow it: new messages, claims, Celery's publishes — deletions still work,
    so ``python -m app purge`` can make room."""

    used: int
    ceiling: int

    @property
    def share(self) -> float | None:
        """The part of the ceiling in use, or None without a ceiling."""
        return self.used / self.ceiling if self.ceiling else None

    @property
    def full(self) -> bool:
        return bool(self.ceiling) and self.used >= self.ceiling


def memory(client: redis.Redis) -> Memory:
    """``INFO memory`` as Redis counts it against ``maxmemory`` (what it does not count,
    ``mem_not_counted_for_evict``: replication and AOF buffers, left out)."""
    info = client.info("memory")
    used = int(info.get("used_memory", 0)) - int(info.get("mem_not_counted_for_evict", 0))
    return Memory(max(0, used), int(info.get("maxmemory", 0)))


def trouble(exc: redis.RedisError) -> str:
    """What a Redis error means, for a log line: a Redis at its memory ceiling answers
    (it refuses writes) — it is not unreachable."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "Redis is at its memory ceiling (maxmemory, noeviction): it refuses writes"
    return f"Redis unreachable error={type(exc).__name__}"


def wait_for_room(client: redis.Redis, pause: float = 5.0, say_every: float = 60.0) -> float:
    """Block while Redis is at its memory ceiling (a worker starting then would die on
    Celery's own first write); the seconds waited. An unreachable Redis returns at once:
    the caller's own retries cover that."""
    waited, said = 0.0, None
    while True:
        try:
            room = memory(client)
        except redis.RedisError:
            return waited
        if not room.full:
            if waited:
                log.warning("Redis has room again after %.0f s: starting", waited)
            return waited
        if said is None or waited - said >= say_every:
            log.error(
                "Redis is at its memory ceiling (%.1f of %.1f MB, noeviction): waiting for room before"
                " starting; make room with `python -m app busiest` and `purge`, or raise the ceiling",
                room.used / MB,
                room.ceiling / MB,
            )
            said = waited
        time.sleep(pause)
        waited += pause


def check(url: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the Redis at ``url``, reachable or not: ``fitness``, an
    untrusted TLS certificate (a setting to fix, not an outage to wait out), and what
    cannot be checked now."""
    warnings = []
    if "ssl_cert_reqs=none" in url:
        warnings.append("REDIS_URL has ssl_cert_reqs=none: TLS without checking who answers")
    try:
        problems, more = fitness(connect(url))
    except redis.RedisError as exc:
        if "certificate verify failed" in str(exc):
            return [
                "REDIS_URL: the Redis server's TLS certificate is not trusted"
                f" ({exc}); name its CA with ?ssl_ca_certs=/path/ca.pem"
            ], warnings
        return [], [*warnings, f"Redis not checked, unreachable now ({type(exc).__name__})"]
    return problems, warnings + more


def fitness(client: redis.Redis) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the Redis the gateway is given: problems stop the
    start (``python -m app check-config``), warnings are printed.

    An evicting ``maxmemory-policy`` may drop a queue or a lease under memory
    pressure (both carry TTLs, which the ``volatile-*`` policies pick first):
    accepted messages would vanish, or two drainers run. Persistence decides what
    a crash takes back (docs/reliability.md, "What Redis must keep"): messages
    answered 202, and reply records, whose loss makes a restored batch answered
    again. Only an append-only file with ``appendfsync always`` loses nothing; every
    other setting is warned about with what it can lose. CONFIG may be disabled on
    managed Redis: the policy and the AOF switch are read from INFO, and what cannot
    be seen is said.
    """
    problems: list[str] = []
    policy = str(client.info("memory").get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        problems.append(
            f"Redis maxmemory-policy is {policy!r}; it must be 'noeviction': queued messages and"
            " leases carry TTLs, so an evicting Redis can drop accepted messages or let two drainers"
            " run (CONFIG SET maxmemory-policy noeviction, or the provider's setting)"
        )
    aof = str(client.info("persistence").get("aof_enabled", "0")) == "1"
    try:
        save = client.config_get("save").get("save")
        fsync = client.config_get("appendfsync").get("appendfsync") if aof else None
    except redis.ResponseError:
        return problems, [_unseen_persistence(aof)]  # CONFIG is disabled
    return problems, [w for w in (_persistence_warning(aof, save, fsync),) if w]


_LOST = "messages answered 202 in that time, and reply records (a batch they covered is answered again)"
_SAFE = "appendonly yes with appendfsync always loses nothing (docs/reliability.md)"


def _persistence_warning(aof: bool, save: str | None, fsync: str | None) -> str | None:
    """What a crash can take back with this persistence, or None when nothing."""
    if aof and fsync == "always":
        return None
    if aof and fsync == "everysec":
        return (
            "Redis appendfsync is 'everysec': a crash of the machine (not of redis-server alone)"
            f" loses up to about 2 s of writes: {_LOST}; {_SAFE}"
        )
    if aof:
        return (
            f"Redis appendfsync is {fsync!r}: a crash of the machine loses what the system had not"
            f" written to disk yet (about 30 s on Linux): {_LOST}; {_SAFE}"
        )
    if save:
        return (
            f"Redis keeps only snapshots (save {save!r}, appendonly no): a crash or kill of"
            f" redis-server loses every write since the last snapshot (minutes): {_LOST}; {_SAFE}"
        )
    return (
        "Redis persistence is off (appendonly no, no save points): a Redis restart loses every"
        f" queued message; {_SAFE}"
    )


def _unseen_persistence(aof: bool) -> str:
    if aof:
        return (
            "Redis CONFIG is disabled, so appendfsync cannot be read: unless it is 'always', a crash"
            f" of the machine loses up to seconds of writes: {_LOST}"
        )
    return (
        "Redis appendonly is off and CONFIG is disabled: at best it keeps snapshots, and a crash"
        f" loses every write since the last one: {_LOST}; {_SAFE}"
    )
