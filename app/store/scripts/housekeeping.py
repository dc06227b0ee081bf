"""What operators and budgets change: a dead letter replayed into its queue
(REPLAY_DEAD_LETTER), a conversation purged (PURGE), a bot call taken from the day's
budget (SPEND_BOT_CALL)."""

from __future__ import annotations

import redis

from app.store import keys
from app.store.scripts.core import Call, _register

__all__ = [
    "ADVANCE_FOLLOW_UP",
    "COUNT_BOT_CALL",
    "PURGE",
    "REPLAY_DEAD_LETTER",
    "SPEND_BOT_CALL",
    "HousekeepingScripts",
]

# A follow-up ladder moves to its next mark (or ends), only if it still follows the
# answer the sender read: a newer bot answer written meanwhile keeps its own ladder.
# KEYS[1] the ladder (hash)  KEYS[2] the follow-ups schedule
# ARGV[1] the answer id read  ARGV[2] the next stage, or '' to end the ladder
# ARGV[3] its due time  ARGV[4] conversation id
# Returns 1 if moved (or ended), 0 if the ladder follows another answer now.
ADVANCE_FOLLOW_UP = """
local ladder, schedule = KEYS[1], KEYS[2]
local answer, stage, due, conversation = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', ladder, 'answer') ~= answer then return 0 end
if stage == '' then
  redis.call('DEL', ladder)
else
  redis.call('HSET', ladder, 'stage', stage)
  redis.call('ZADD', schedule, due, conversation)
end
return 1
"""


# Re-queue one dead letter, only if it is still in the list (compare-and-remove:
# two operators replaying at once re-queue it once).
# KEYS[1] dead letters  KEYS[2] the conversation's queue  KEYS[3] conversation index
# ARGV[1] the entry as read  ARGV[2] conversation id  ARGV[3] queue TTL s
# ARGV[4..] its stored messages, in order
# Returns the number of messages re-queued, or -1 if the entry was gone.
REPLAY_DEAD_LETTER = """
local dead_letters, queue, conversations = KEYS[1], KEYS[2], KEYS[3]
local entry, conversation, queue_ttl = ARGV[1], ARGV[2], ARGV[3]
if redis.call('LREM', dead_letters, 1, entry) == 0 then return -1 end
if #ARGV < 4 then return 0 end
redis.call('RPUSH', queue, unpack(ARGV, 4))
redis.call('EXPIRE', queue, queue_ttl)
redis.call('SADD', conversations, conversation)
return #ARGV - 3
"""

# The loop guard: count one bot call of a conversation within a window, unless the
# window holds the most already (another bot's auto-replies, a flood), by Redis's clock.
# KEYS[1] the conversation's recent bot calls (sorted set)
# ARGV[1] window s  ARGV[2] most calls in the window  ARGV[3] the call's member (the
# batch's key: a batch run again is not counted twice)
# Returns the calls in the window before this one (this one counted only below the most).
COUNT_BOT_CALL = """
local calls = KEYS[1]
local window, most, member = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', calls, '-inf', now - tonumber(window))
local before = redis.call('ZCARD', calls)
if redis.call('ZSCORE', calls, member) then return before - 1 end
if before >= tonumber(most) then return before end
redis.call('ZADD', calls, now, member)
redis.call('EXPIRE', calls, math.ceil(tonumber(window)))
return before
"""

# The spend ceiling: take one bot call from today's budget, if any is left.
# KEYS[1] today's bot-call count  ARGV[1] calls allowed per day (0: no ceiling)
# ARGV[2] TTL s of the count
# Returns the calls used today, this one included; or -1 when the budget is spent
# (nothing taken).
SPEND_BOT_CALL = """
local count = KEYS[1]
local per_day, ttl = ARGV[1], ARGV[2]
local used = tonumber(redis.call('GET', count) or '0')
local limit = tonumber(per_day)
if limit > 0 and used >= limit then return -1 end
used = redis.call('INCR', count)
redis.call('EXPIRE', count, ttl)
return used
"""

# Operator purge of one conversation: its waiting and in-flight messages go.
# KEYS[1] queue  KEYS[2] processing  KEYS[3] ledger  KEYS[4] conversation index
# ARGV[1] conversation id
# Returns the number of messages removed. A drainer holding the lease finds
# nothing left and releases it.
PURGE = """
local queue, processing, ledger, conversations = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local conversation = ARGV[1]
local count = redis.call('LLEN', queue) + redis.call('LLEN', processing)
redis.call('DEL', queue, processing, ledger)
redis.call('SREM', conversations, conversation)
return count
"""


class HousekeepingScripts:
    """The housekeeping scripts, registered on one Redis client, each called by one method."""

    def __init__(self, client: redis.Redis) -> None:
        self._spend_bot_call = _register(client, SPEND_BOT_CALL)
        self._count_bot_call = _register(client, COUNT_BOT_CALL)
        self._replay_dead_letter = _register(client, REPLAY_DEAD_LETTER)
        self._purge = _register(client, PURGE)
        self._advance_follow_up = _register(client, ADVANCE_FOLLOW_UP)

    def advance_follow_up(
        self, company: str, conversation: str, answer: str, stage: int | None, due: float
    ) -> Call[bool]:
        """Move the ladder following ``answer`` to ``stage`` due at ``due`` (None: end it);
        False when it follows a newer answer now."""
        return Call(
            self._advance_follow_up,
            [keys.follow_up(company, conversation), keys.follow_ups(company)],
            [answer, "" if stage is None else stage, due, conversation],
            lambda raw: bool(raw),
        )

    def spend_bot_call(self, company: str, day: str, per_day: int) -> Call[int | None]:
        """Take one bot call from ``day``'s budget: the calls used with it, or None
        when ``per_day`` are used up (0: no ceiling, the call is only counted)."""
        return Call(
            self._spend_bot_call,
            [keys.bot_calls_day(company, day)],
            [per_day, 2 * 24 * 3600],
            lambda raw: None if int(raw) < 0 else int(raw),
        )

    def count_bot_call(
        self, company: str, conversation: str, window: float, most: int, member: str
    ) -> Call[int]:
        """The conversation's bot calls in the last ``window`` seconds before this one;
        this one is counted only while they are fewer than ``most``."""
        return Call(
            self._count_bot_call,
            [keys.recent_bot_calls(company, conversation)],
            [window, most, member],
            int,
        )

    def replay_dead_letter(
        self, company: str, conversation: str, entry: str, messages: list[str], queue_ttl: int
    ) -> Call[int | None]:
        """Messages re-queued; None when the entry had left the list meanwhile."""
        return Call(
            self._replay_dead_letter,
            [keys.dead_letters(company), keys.queue(company, conversation), keys.conversation_index(company)],
            [entry, conversation, queue_ttl, *messages],
            lambda raw: None if int(raw) < 0 else int(raw),
        )

    def purge(self, company: str, conversation: str) -> Call[int]:
        """Messages dropped."""
        return Call(
            self._purge,
            [
                keys.queue(company, conversation),
                keys.processing(company, conversation),
                keys.ledger(company, conversation),
                keys.conversation_index(company),
            ],
            [conversation],
            int,
        )
