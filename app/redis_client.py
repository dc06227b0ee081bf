"""Redis connections: made once per process from the settings and passed in."""

from __future__ import annotations

import redis

__all__ = ["connect"]


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
