"""Dead letters: list them, and re-queue them in order.

A replayed message goes back to the end of its conversation's queue with its
original ``received_at``, so its batch is due at once; the sweeper schedules
the drain within ``SWEEP_INTERVAL_SECONDS``.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from app import keys
from app.scripts import Scripts

__all__ = ["list_dead_letters", "replay_dead_letters"]


def list_dead_letters(client: redis.Redis, company: str, limit: int = 50) -> list[dict[str, Any]]:
    entries = []
    for raw in client.lrange(keys.dead_letters(company), 0, limit - 1):
        try:
            entries.append(json.loads(raw))
        except ValueError:
            entries.append({"error": "unreadable dead letter", "raw": raw[:200]})
    return entries


def replay_dead_letters(
    client: redis.Redis, scripts: Scripts, company: str, queue_ttl: int, limit: int | None = None
) -> int:
    """Re-queue up to ``limit`` dead letters, oldest first; return messages re-queued."""
    requeued = replayed = 0
    while limit is None or replayed < limit:
        raw = client.lindex(keys.dead_letters(company), 0)
        if raw is None:
            break
        try:
            entry = json.loads(raw)
            conv, messages = str(entry["conversation_id"]), [str(m) for m in entry["messages"]]
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"dead letter at the head of {keys.dead_letters(company)} is unreadable"
            ) from None
        count = scripts.replay_dead_letter(company, conv, raw, messages, queue_ttl).run()
        if count is not None:
            requeued += count
            replayed += 1
    return requeued
