"""What an operator asks of the conversation queues (Flower cannot see them)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from app.chatwoot.messages import received_at
from app.metrics import Stat
from app.store import keys
from app.store.client import redis_now
from app.store.scripts import Scripts

__all__ = [
    "ConversationState",
    "active_states",
    "busiest",
    "conversation_state",
    "conversation_states",
    "in_the_last",
    "purge",
    "refresh_gauges",
    "waiting_for_a_slot",
]


@dataclass(frozen=True)
class ConversationState:
    conversation: str
    waiting: int
    in_flight: int
    lease_holder: str | None
    lease_ttl_seconds: float | None
    oldest_age_seconds: float | None
    handoff: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


HISTORY_KEPT = 600  # counter snapshots: two hours at the default GAUGES_INTERVAL_SECONDS (15)
SLOT_GRACE_SECONDS = 1.0  # a due conversation not taken by then waits for a free pool slot
_FIELDS = 7  # values read per conversation, in the order of _read
_CHUNK = 500


def _read(pipe: redis.client.Pipeline, company: str, conversation: str) -> None:
    pipe.llen(keys.queue(company, conversation))
    pipe.llen(keys.processing(company, conversation))
    pipe.get(keys.lease(company, conversation))
    pipe.pttl(keys.lease(company, conversation))
    pipe.lindex(keys.processing(company, conversation), 0)
    pipe.lindex(keys.queue(company, conversation), 0)
    pipe.get(keys.handoff(company, conversation))


def _state(conversation: str, values: list[Any], now: float) -> ConversationState:
    waiting, in_flight, holder, pttl, first_flight, first_queued, handoff = values
    oldest = received_at(first_flight) or received_at(first_queued)
    return ConversationState(
        conversation=conversation,
        waiting=waiting,
        in_flight=in_flight,
        lease_holder=holder,
        lease_ttl_seconds=round(pttl / 1000, 1) if holder and pttl > 0 else None,
        oldest_age_seconds=round(now - oldest, 1) if oldest else None,
        handoff=handoff,
    )


def conversation_states(
    client: redis.Redis, company: str, conversations: list[str], now: float | None = None
) -> list[ConversationState]:
    """The state of each conversation, read in pipelined chunks."""
    now = redis_now(client) if now is None else now
    states = []
    for start in range(0, len(conversations), _CHUNK):
        chunk = conversations[start : start + _CHUNK]
        pipe = client.pipeline(transaction=False)
        for conversation in chunk:
            _read(pipe, company, conversation)
        values = pipe.execute()
        states += [_state(c, values[i * _FIELDS : (i + 1) * _FIELDS], now) for i, c in enumerate(chunk)]
    return states


def active_states(client: redis.Redis, company: str) -> list[ConversationState]:
    """Every conversation that may hold work (the sweeper's index)."""
    conversations = list(client.sscan_iter(keys.conversation_index(company), count=_CHUNK))
    return conversation_states(client, company, conversations)


def refresh_gauges(client: redis.Redis, companies: Iterable[str]) -> None:
    """Sum every conversation's state into ``<company>:webhook_gauges`` (the worker's
    ``gateway.gauges`` task): the one pass over the conversations that /metrics reads,
    so a scrape costs a few commands per company, however many conversations wait."""
    for company in companies:
        states = active_states(client, company)
        now = redis_now(client)
        waiting_for_slot, slot_wait = waiting_for_a_slot(client, company, now)
        client.hset(
            keys.gauges(company),
            mapping={
                "waiting": sum(s.waiting + s.in_flight for s in states),
                "live_leases": sum(1 for s in states if s.lease_holder),
                "oldest_age_seconds": max((s.oldest_age_seconds or 0.0 for s in states), default=0.0),
                "waiting_for_slot": waiting_for_slot,
                "slot_wait_seconds": slot_wait,
                "at": now,
            },
        )
        sent, failed = client.hmget(keys.stats(company), Stat.REPLIES_SENT, Stat.REPLIES_FAILED)
        snapshot = {"at": now, "replies_sent": int(sent or 0), "replies_failed": int(failed or 0)}
        pipe = client.pipeline(transaction=False)
        pipe.lpush(keys.counter_history(company), json.dumps(snapshot))
        pipe.ltrim(keys.counter_history(company), 0, HISTORY_KEPT - 1)
        pipe.expire(keys.counter_history(company), 3 * 3600)
        pipe.execute()


def waiting_for_a_slot(client: redis.Redis, company: str, now: float) -> tuple[int, float]:
    """(conversations whose batch is due but no drain has taken, how long the earliest of
    them has waited): the dispatcher takes a due conversation within milliseconds while a
    pool slot is free, so these wait for one (every slot on a slow bot call), or for a
    worker at all."""
    overdue = now - SLOT_GRACE_SECONDS
    pipe = client.pipeline(transaction=False)
    pipe.zcount(keys.due(company), "-inf", overdue)
    pipe.zrange(keys.due(company), 0, 0, withscores=True)
    count, earliest = pipe.execute()
    if not count or not earliest:
        return 0, 0.0
    return int(count), round(max(0.0, now - float(earliest[0][1])), 1)


def in_the_last(
    client: redis.Redis, company: str, seconds: float, now: float
) -> tuple[dict[str, int], float] | None:
    """How much each snapshotted counter grew over about the last ``seconds``, and over
    how long exactly (from the newest snapshot at least that old, else the oldest kept);
    None without two snapshots."""
    history = [json.loads(raw) for raw in client.lrange(keys.counter_history(company), 0, -1)]
    if len(history) < 2:
        return None
    latest = history[0]
    then = next((h for h in history if now - h["at"] >= seconds), history[-1])
    grown = {k: int(latest[k]) - int(then[k]) for k in ("replies_sent", "replies_failed")}
    return grown, float(latest["at"]) - float(then["at"])


def conversation_state(
    client: redis.Redis, company: str, conversation: str, now: float | None = None
) -> ConversationState:
    return conversation_states(client, company, [conversation], now)[0]


def busiest(client: redis.Redis, company: str, limit: int = 20) -> list[ConversationState]:
    """Conversations with work in flight, most messages first."""
    states = active_states(client, company)
    states.sort(key=lambda s: (s.waiting + s.in_flight, s.oldest_age_seconds or 0), reverse=True)
    return states[:limit]


def purge(client: redis.Redis, scripts: Scripts, company: str, conversation: str) -> int:
    """Drop a conversation's waiting and in-flight messages; return how many."""
    return scripts.housekeeping.purge(company, conversation).run()
