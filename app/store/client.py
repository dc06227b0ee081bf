"""Redis connections: made once per process from the settings and passed in."""

from __future__ import annotations

import redis

__all__ = ["connect", "fitness", "redis_now"]


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
