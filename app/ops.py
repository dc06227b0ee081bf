"""What an operator asks of the conversation queues (Flower cannot see them)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import redis

from app import keys
from app.payload import received_at
from app.scripts import Scripts

__all__ = ["ConversationState", "busiest", "conversation_state", "purge"]


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


def conversation_state(
    client: redis.Redis, company: str, conversation: str, now: float | None = None
) -> ConversationState:
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.llen(keys.queue(company, conversation))
    pipe.llen(keys.processing(company, conversation))
    pipe.get(keys.active_task(company, conversation))
    pipe.pttl(keys.active_task(company, conversation))
    pipe.lindex(keys.processing(company, conversation), 0)
    pipe.lindex(keys.queue(company, conversation), 0)
    pipe.get(keys.handoff(company, conversation))
    waiting, in_flight, holder, pttl, first_flight, first_queued, handoff = pipe.execute()
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


def busiest(client: redis.Redis, company: str, limit: int = 20) -> list[ConversationState]:
    """Conversations with work in flight, most messages first."""
    states = [
        conversation_state(client, company, c) for c in client.sscan_iter(keys.conversation_index(company))
    ]
    states.sort(key=lambda s: (s.waiting + s.in_flight, s.oldest_age_seconds or 0), reverse=True)
    return states[:limit]


def purge(client: redis.Redis, scripts: Scripts, company: str, conversation: str) -> int:
    """Drop a conversation's waiting and in-flight messages; return how many."""
    return int(
        scripts.purge(
            keys=[
                keys.queue(company, conversation),
                keys.processing(company, conversation),
                keys.sent_parts(company, conversation),
                keys.conversation_index(company),
            ],
            args=[conversation],
            client=client,
        )
    )
