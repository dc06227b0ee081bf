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
    accepted messages would vanish, or two drainers run. Without persistence a
    Redis restart loses every queued message. CONFIG may be disabled on managed
    Redis: the policy is read from INFO, and persistence is only warned about
    when it can be seen to be off.
    """
    problems: list[str] = []
    warnings: list[str] = []
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
    except redis.ResponseError:
        save = None  # CONFIG is disabled: persistence cannot be seen
    if not aof and save == "":
        warnings.append(
            "Redis persistence is off (appendonly no, no save points): a Redis restart loses every"
            " queued message; turn on appendonly"
        )
    return problems, warnings
