"""When a conversation is drained: due entries claimed by the dispatcher
(CLAIM_DUE), a run rescheduling itself (DEFER) or giving up the lease when nothing
waits (RELEASE_IF_EMPTY), stranded work found by the sweeper (RESCUE)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from app.store import keys
from app.store.scripts.core import Call, _checked, _held, _register

__all__ = [
    "CLAIM_DUE",
    "DEFER",
    "RELEASE_IF_EMPTY",
    "RESCUE",
    "Dispatch",
    "DueClaim",
    "Rescue",
    "ScheduleScripts",
]


# Release the lease, only by its holder and only when nothing is left to do
# (a due entry left by messages this run already answered goes too).
# KEYS[1] lease  KEYS[2] queue  KEYS[3] processing  KEYS[4] conversation index
# KEYS[5] due schedule
# ARGV[1] run id  ARGV[2] conversation id
# Returns 1 released, 0 more work (keep draining), false not the holder.
RELEASE_IF_EMPTY = """
local lease, queue, processing, conversations = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local due_schedule = KEYS[5]
local run_id, conversation = ARGV[1], ARGV[2]
if redis.call('GET', lease) ~= run_id then return false end
if redis.call('LLEN', queue) > 0 or redis.call('LLEN', processing) > 0 then
  return 0
end
redis.call('DEL', lease)
redis.call('SREM', conversations, conversation)
redis.call('ZREM', due_schedule, conversation)
return 1
"""

# The dispatcher: claim one due conversation. The entry is removed whoever wins,
# so two dispatchers (two containers) never dispatch it twice; the lease is taken
# for a fresh task unless a holder exists (it drains what is queued before it
# releases, RELEASE_IF_EMPTY).
# KEYS[1] due schedule  KEYS[2] lease
# ARGV[1] conversation id  ARGV[2] fresh task id  ARGV[3] lease TTL ms
# Returns {1, task id, 0} dispatched (publish it); {2, holder, pttl ms} a holder
# exists; {0, '', 0} not due (any more).
CLAIM_DUE = """
local due_schedule, lease = KEYS[1], KEYS[2]
local conversation, fresh_task, ttl_ms = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local score = redis.call('ZSCORE', due_schedule, conversation)
if not score or tonumber(score) > now then return {0, '', 0} end
redis.call('ZREM', due_schedule, conversation)
if redis.call('SET', lease, fresh_task, 'NX', 'PX', ttl_ms) then return {1, fresh_task, 0} end
return {2, redis.call('GET', lease) or '', redis.call('PTTL', lease)}
"""

# A run that must wait (the batch is not due yet, a retry after a failure, its
# time is up): schedule the conversation at now + ARGV[3] and give up the lease;
# the dispatcher hands it to a fresh task then. Nothing waits in a countdown task.
# KEYS[1] lease  KEYS[2] due schedule
# ARGV[1] run id  ARGV[2] conversation id  ARGV[3] seconds from now (Redis's clock)
# Returns 1 deferred, false not the holder.
DEFER = """
local lease, due_schedule = KEYS[1], KEYS[2]
local run_id, conversation, seconds = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', lease) ~= run_id then return false end
local t = redis.call('TIME')
redis.call('ZADD', due_schedule, tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(seconds), conversation)
redis.call('DEL', lease)
return 1
"""

# Sweeper: a conversation with work but neither a live lease nor a due entry (its
# holder died, a publish was lost) is scheduled now; the dispatcher takes it.
# KEYS[1] lease  KEYS[2] queue  KEYS[3] processing  KEYS[4] conversation index
# KEYS[5] due schedule
# ARGV[1] conversation id
# Returns 1 rescheduled, 0 a live lease or a due entry exists, -1 nothing to do.
RESCUE = """
local lease, queue, processing, conversations = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local due_schedule = KEYS[5]
local conversation = ARGV[1]
if redis.call('EXISTS', lease) == 1 then return 0 end
if redis.call('LLEN', queue) == 0 and redis.call('LLEN', processing) == 0 then
  redis.call('SREM', conversations, conversation)
  return -1
end
if redis.call('ZSCORE', due_schedule, conversation) then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', due_schedule, tonumber(t[1]) + tonumber(t[2]) / 1000000, conversation)
return 1
"""


class DueClaim(StrEnum):
    DISPATCHED = "dispatched"  # the lease names the fresh task: publish it
    HELD = "held"  # a holder exists; it drains what is queued before it releases
    NOT_DUE = "not-due"  # not due (any more): another dispatcher took it, or it moved


@dataclass(frozen=True)
class Dispatch:
    """CLAIM_DUE's answer for one conversation."""

    claim: DueClaim
    holder: str  # the fresh task id (dispatched) or the current holder (held)
    lease_ms_left: int  # the holder's lease (held)

    @classmethod
    def decode(cls, raw: list[Any]) -> Dispatch:
        code, holder, pttl = raw
        claim = {1: DueClaim.DISPATCHED, 2: DueClaim.HELD}.get(int(code), DueClaim.NOT_DUE)
        return cls(claim, str(holder), int(pttl))


class Rescue(StrEnum):
    RESCHEDULED = "rescheduled"  # stranded work, now due
    BUSY = "busy"  # a live lease or a due entry already covers it
    EMPTY = "empty"  # nothing to do: out of the conversation index


class ScheduleScripts:
    """The schedule scripts, registered on one Redis client, each called by one method."""

    def __init__(self, client: redis.Redis) -> None:
        self._claim_due = _register(client, CLAIM_DUE)
        self._defer = _register(client, DEFER)
        self._rescue = _register(client, RESCUE)
        self._release_if_empty = _register(client, RELEASE_IF_EMPTY)

    def claim_due(self, company: str, conversation: str, task_id: str, ttl_ms: int) -> Call[Dispatch]:
        return Call(
            self._claim_due,
            [keys.due(company), keys.lease(company, conversation)],
            [conversation, task_id, ttl_ms],
            Dispatch.decode,
        )

    def defer(self, company: str, conversation: str, run_id: str, seconds: float) -> Call[None]:
        """Schedule the conversation ``seconds`` from now and give up the lease."""
        return Call(
            self._defer,
            [keys.lease(company, conversation), keys.due(company)],
            [run_id, conversation, round(seconds, 3)],
            _checked,
        )

    def rescue(self, company: str, conversation: str) -> Call[Rescue]:
        return Call(
            self._rescue,
            [
                keys.lease(company, conversation),
                keys.queue(company, conversation),
                keys.processing(company, conversation),
                keys.conversation_index(company),
                keys.due(company),
            ],
            [conversation],
            lambda raw: {1: Rescue.RESCHEDULED, 0: Rescue.BUSY}.get(int(raw), Rescue.EMPTY),
        )

    def release_if_empty(self, company: str, conversation: str, run_id: str) -> Call[bool]:
        """True when released; False when work is left (the run keeps draining)."""
        return Call(
            self._release_if_empty,
            [
                keys.lease(company, conversation),
                keys.queue(company, conversation),
                keys.processing(company, conversation),
                keys.conversation_index(company),
                keys.due(company),
            ],
            [run_id, conversation],
            lambda raw: _held(raw) == 1,
        )
