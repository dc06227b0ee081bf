"""Which bot calls a batch needs, in order: pure, no Redis.

A message the reply ledger covers keeps the answer stored for it (with the messages
that answer covers): a resumed batch posts that answer and never asks the bot again.
The others are grouped by the batching rules (``app.batching.rules.segments``)."""

from __future__ import annotations

from typing import NamedTuple

from app.batching.rules import Segment, segments
from app.chatwoot.messages import StoredMessage
from app.drain.ledger import LedgerState, StoredAnswer

__all__ = ["BotCall", "plan"]


class BotCall(NamedTuple):
    """Messages to answer with one bot call, and the answer stored for them, if any."""

    segment: Segment
    answer: StoredAnswer | None


def plan(messages: list[StoredMessage], state: LedgerState, max_avg_chars: int) -> list[BotCall]:
    """The bot calls for ``messages``, in order (``BATCH_MAX_AVG_CHARS``: ``max_avg_chars``)."""

    def fresh_calls(fresh: list[StoredMessage]) -> list[BotCall]:
        return [BotCall(s, None) for s in segments(fresh, max_avg_chars)]

    calls: list[BotCall] = []
    fresh: list[StoredMessage] = []
    index = 0
    while index < len(messages):
        answer = state.answer_covering(messages[index].id)
        if answer is None:
            fresh.append(messages[index])
            index += 1
            continue
        calls += fresh_calls(fresh)
        fresh = []
        covered = [messages[index]]
        index += 1
        while index < len(messages) and _covered_by(state, messages[index], answer):
            covered.append(messages[index])
            index += 1
        calls.append(BotCall(Segment(tuple(covered), batched=len(covered) > 1), answer))
    return calls + fresh_calls(fresh)


def _covered_by(state: LedgerState, message: StoredMessage, answer: StoredAnswer) -> bool:
    found = state.answer_covering(message.id)
    return found is not None and found.answer_id == answer.answer_id
