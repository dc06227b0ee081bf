"""Every multi-key state change of the gateway, as one Lua script each.

A script is registered once per Redis client (``Scripts(redis)``) and called
by EVALSHA. Scripts receive every key name in KEYS (see ``app.keys``); none
builds a key. Each header documents KEYS and ARGV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

__all__ = ["Batch", "EnqueueResult", "Scripts"]

# KEYS[1] queue  KEYS[2] lease  KEYS[3] seen message  KEYS[4] seen delivery
# KEYS[5] conversation index  KEYS[6] stats hash  KEYS[7] handoff marker
# KEYS[8] sessions zset  KEYS[9] session accounts hash
# ARGV[1] stored message (JSON)  ARGV[2] queue TTL s  ARGV[3] max queue length
# ARGV[4] fresh task id  ARGV[5] lease TTL ms  ARGV[6] seen TTL s
# ARGV[7] conversation id  ARGV[8] "1" if KEYS[4] is a real delivery id
# ARGV[9] the conversation's status in the payload ("pending" ends a handoff)
# ARGV[10] now (unix s)  ARGV[11] account id
# Returns {status, queue length, lease holder, lease pttl ms, acquired 0/1}
# where status is "queued", "duplicate", "full" or "handoff".
ENQUEUE = """
if ARGV[9] == 'pending' then
  redis.call('DEL', KEYS[7])
elseif redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('HINCRBY', KEYS[6], 'webhooks_ignored', 1)
  return {'handoff', 0, '', 0, 0}
end
if redis.call('EXISTS', KEYS[3]) == 1 or
   (ARGV[8] == '1' and redis.call('EXISTS', KEYS[4]) == 1) then
  redis.call('HINCRBY', KEYS[6], 'webhooks_duplicate', 1)
  return {'duplicate', 0, '', 0, 0}
end
local len = redis.call('LLEN', KEYS[1])
if len >= tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[6], 'webhooks_rejected_429', 1)
  return {'full', len, '', 0, 0}
end
len = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[6])
if ARGV[8] == '1' then redis.call('SET', KEYS[4], '1', 'EX', ARGV[6]) end
redis.call('SADD', KEYS[5], ARGV[7])
redis.call('HINCRBY', KEYS[6], 'webhooks_queued', 1)
redis.call('ZADD', KEYS[8], ARGV[10], ARGV[7])
redis.call('HSET', KEYS[9], ARGV[7], ARGV[11])
if redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[5]) then
  return {'queued', len, ARGV[4], tonumber(ARGV[5]), 1}
end
return {'queued', len, redis.call('GET', KEYS[2]) or '', redis.call('PTTL', KEYS[2]), 0}
"""

# Compare-and-set of the lease: hand it from one task id to another.
# KEYS[1] lease  ARGV[1] expected holder  ARGV[2] new holder  ARGV[3] TTL ms
# Returns 1 if the lease now names ARGV[2], else 0.
HAND_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# A task starting (or its heartbeat): keep the lease it holds, or take a free one.
# KEYS[1] lease  ARGV[1] task id  ARGV[2] TTL ms  ARGV[3] "1" to take a free lease
# Returns 1 if the task holds the lease afterwards, else 0.
HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder and ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Compare-and-delete: remove a key only while it holds the expected value.
# Used for the lease of a task whose drain task could not be published, and
# for a bot-requested handoff marker ("bot", never a human's "agent").
# KEYS[1] the key  ARGV[1] expected value
# Returns 1 if deleted, 0 if the key holds something else (or nothing).
DELETE_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# Move the next batch into processing, unless a leftover batch is there; or,
# with ARGV[3] = "1" (stale-reply suppression), move fragments that arrived
# during the bot call beside the batch in flight.
# KEYS[1] queue  KEYS[2] processing  KEYS[3] lease
# ARGV[1] task id  ARGV[2] most messages to move  ARGV[3] "1" to append
# Returns false if the task does not hold the lease, else the leftover batch
# or the messages moved.
CLAIM_BATCH = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
if ARGV[3] ~= '1' then
  local leftover = redis.call('LRANGE', KEYS[2], 0, -1)
  if #leftover > 0 then return leftover end
end
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #items == 0 then return {} end
redis.call('RPUSH', KEYS[2], unpack(items))
redis.call('LTRIM', KEYS[1], #items, -1)
return items
"""

# Messages whose reply was sent (or that were dead-lettered) leave processing.
# KEYS[1] processing  KEYS[2] lease  KEYS[3] sent-parts hash  KEYS[4] dead letters
# KEYS[5] stats hash
# ARGV[1] task id  ARGV[2] dead letter JSON or ""  ARGV[3..] stored messages
# Returns false without the lease, else the messages left in processing.
COMPLETE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
if ARGV[2] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[2])
  redis.call('HINCRBY', KEYS[5], 'dead_letters', 1)
end
for i = 3, #ARGV do redis.call('LREM', KEYS[1], 1, ARGV[i]) end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[3]) end
return left
"""

# Release the lease, only by its holder and only when nothing is left to do.
# KEYS[1] lease  KEYS[2] queue  KEYS[3] processing  KEYS[4] conversation index
# ARGV[1] task id  ARGV[2] conversation id
# Returns 1 released, 0 more work (keep draining), -1 not the holder.
RELEASE_IF_EMPTY = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('LLEN', KEYS[3]) > 0 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[4], ARGV[2])
return 1
"""

# Sweeper: lease a conversation that has work and no live lease.
# KEYS[1] lease  KEYS[2] queue  KEYS[3] processing  KEYS[4] conversation index
# ARGV[1] fresh task id  ARGV[2] TTL ms  ARGV[3] conversation id
# Returns 1 leased (schedule ARGV[1]), 0 a live lease exists, -1 nothing to do.
RESCUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[3])
  return -1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


# Re-queue the oldest dead letter, only if it is still the oldest (compare-and-pop).
# KEYS[1] dead letters  KEYS[2] the conversation's queue  KEYS[3] conversation index
# ARGV[1] the entry as read  ARGV[2] conversation id  ARGV[3] queue TTL s
# ARGV[4..] its stored messages, in order
# Returns the number of messages re-queued, or -1 if the head changed meanwhile.
REPLAY_DEAD_LETTER = """
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return -1 end
redis.call('LPOP', KEYS[1])
if #ARGV < 4 then return 0 end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return #ARGV - 3
"""


# An agent's public reply: the gateway's own reply coming back, or a takeover.
# KEYS[1] own-reply marker of the message id  KEYS[2] own pending digests
# KEYS[3] handoff marker  KEYS[4] stats hash
# ARGV[1] digest of the content  ARGV[2] resume after (s, 0 = never)
# Returns "own" or "takeover".
AGENT_REPLY = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return 'own'
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[3], 'agent', 'EX', ARGV[2])
else
  redis.call('SET', KEYS[3], 'agent')
end
redis.call('HINCRBY', KEYS[4], 'agent_takeovers', 1)
return 'takeover'
"""

# Take the sessions idle since before ARGV[1] out of the sessions set, once.
# KEYS[1] sessions zset  KEYS[2] session accounts hash
# ARGV[1] cutoff (unix s)  ARGV[2] most to take
# Returns {conversation, account id, ...}.
EXPIRE_SESSIONS = """
local idle = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local result = {}
for _, conv in ipairs(idle) do
  redis.call('ZREM', KEYS[1], conv)
  table.insert(result, conv)
  table.insert(result, redis.call('HGET', KEYS[2], conv) or '')
  redis.call('HDEL', KEYS[2], conv)
end
return result
"""


# Operator purge of one conversation: its waiting and in-flight messages go.
# KEYS[1] queue  KEYS[2] processing  KEYS[3] sent-parts hash  KEYS[4] conversation index
# ARGV[1] conversation id
# Returns the number of messages removed. A drainer holding the lease finds
# nothing left and releases it.
PURGE = """
local count = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return count
"""


@dataclass(frozen=True)
class EnqueueResult:
    status: str  # "queued", "duplicate", "full" or "handoff"
    length: int
    holder: str
    holder_pttl_ms: int
    acquired: bool


class Scripts:
    """The Lua scripts, registered on one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.enqueue = client.register_script(ENQUEUE)
        self.hand_over = client.register_script(HAND_OVER)
        self.hold = client.register_script(HOLD)
        self.delete_if_equals = client.register_script(DELETE_IF_EQUALS)
        self.claim_batch = client.register_script(CLAIM_BATCH)
        self.complete = client.register_script(COMPLETE)
        self.release_if_empty = client.register_script(RELEASE_IF_EMPTY)
        self.rescue = client.register_script(RESCUE)
        self.replay_dead_letter = client.register_script(REPLAY_DEAD_LETTER)
        self.agent_reply = client.register_script(AGENT_REPLY)
        self.expire_sessions = client.register_script(EXPIRE_SESSIONS)
        self.purge = client.register_script(PURGE)


class Batch:
    """Commands and Lua calls sent in one round trip (a non-transactional pipeline).

    redis-py checks ``SCRIPT EXISTS`` before every pipeline holding a script —
    a second round trip. Here a script goes as a bare EVALSHA; if Redis lost
    its script cache (a restart), that one call comes back NOSCRIPT, did
    nothing, and is run again on its own, which loads the script.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pipe = client.pipeline(transaction=False)
        self._calls: dict[int, tuple[Script, list[str], list[Any]]] = {}

    def script(self, script: Script, keys: list[str], args: list[Any]) -> None:
        self._calls[len(self.pipe)] = (script, keys, args)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    def execute(self) -> list[Any]:
        results = self.pipe.execute(raise_on_error=False)
        for index, (script, keys, args) in self._calls.items():
            if isinstance(results[index], NoScriptError):
                results[index] = script(keys=keys, args=args, client=self.client)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results
