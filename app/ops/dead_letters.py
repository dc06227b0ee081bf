"""Dead letters: list them, and re-queue them in order.

A replayed message goes back to the end of its conversation's queue with its
original ``received_at``, so its batch is due at once; the sweeper schedules
the drain within ``SWEEP_INTERVAL_SECONDS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from app.store import keys
from app.store.scripts import Scripts

__all__ = [
    "Replay",
    "is_ambiguous",
    "list_dead_letters",
    "read_dead_letter",
    "replay_dead_letters",
    "replay_one",
]


def list_dead_letters(client: redis.Redis, company: str, limit: int = 50) -> list[dict[str, Any]]:
    entries = []
    for raw in client.lrange(keys.dead_letters(company), 0, limit - 1):
        try:
            entries.append(json.loads(raw))
        except ValueError:
            entries.append({"error": "unreadable dead letter", "raw": raw[:200]})
    return entries


@dataclass(frozen=True)
class Replay:
    letters: int  # dead letters re-queued
    messages: int  # their messages
    ambiguous_skipped: int  # left in the list: their reply may have reached the contact


def is_ambiguous(entry: dict[str, Any]) -> bool:
    """A dead letter whose reply may have been posted (a timeout after the POST went
    out): replaying it may answer the contact a second time."""
    return bool(entry.get("ambiguous"))


def replay_dead_letters(
    client: redis.Redis,
    scripts: Scripts,
    company: str,
    queue_ttl: int,
    limit: int | None = None,
    include_ambiguous: bool = False,
) -> Replay:
    """Re-queue up to ``limit`` dead letters, oldest first. Ambiguous ones stay in the
    list unless ``include_ambiguous``."""
    letters = messages_requeued = skipped = 0
    for raw in client.lrange(keys.dead_letters(company), 0, -1):
        if limit is not None and letters >= limit:
            break
        entry = read_dead_letter(company, raw)
        if is_ambiguous(entry) and not include_ambiguous:
            skipped += 1
            continue
        count = replay_one(scripts, company, raw, entry, queue_ttl)
        if count is not None:
            messages_requeued += count
            letters += 1
    return Replay(letters, messages_requeued, skipped)


def read_dead_letter(company: str, raw: str) -> dict[str, Any]:
    """A dead letter as stored; ValueError when it cannot be replayed (no conversation,
    no messages)."""
    try:
        entry = json.loads(raw)
    except ValueError:
        entry = None
    if (
        not isinstance(entry, dict)
        or "conversation_id" not in entry
        or not isinstance(entry.get("messages"), list)
    ):
        raise ValueError(f"a dead letter in {keys.dead_letters(company)} is unreadable")
    return entry


def replay_one(scripts: Scripts, company: str, raw: str, entry: dict[str, Any], queue_ttl: int) -> int | None:
    """Re-queue one dead letter (``raw`` as read, ``entry`` its content): the messages
    re-queued, or None when it had left the list meanwhile."""
    messages = [str(m) for m in entry["messages"]]
    return scripts.housekeeping.replay_dead_letter(
        company, str(entry["conversation_id"]), raw, messages, queue_ttl
    ).run()
