"""What a webhook changes in Redis: a message made durable in its conversation's
queue and its batch scheduled (ENQUEUE), and an edit, transcript or deletion applied
to a message still waiting (UPDATE_QUEUED)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis

from app.store import keys
from app.store.scripts.core import Call, _bit, _register
from app.store.scripts.ownership import _OWNERSHIP

if TYPE_CHECKING:
    from app.chatwoot.messages import MessageUpdate, StoredMessage
    from app.settings import CompanyConfig, Settings

__all__ = ["ENQUEUE", "UPDATE_QUEUED", "EnqueueResult", "Enqueued", "IntakeScripts", "Updated"]


# The clock of every due time and session is Redis's own (TIME), never a web
# or worker clock: ARGV[1] is the stored message's JSON up to its last member,
# '"received_at":', and the script completes it with the arrival time.
# KEYS[1] queue  KEYS[2] lease  KEYS[3] seen message  KEYS[4] seen delivery
# KEYS[5] conversation index  KEYS[6] stats hash  KEYS[7] handoff marker
# KEYS[8] sessions zset  KEYS[9] session accounts hash  KEYS[10] last seen status
# KEYS[11] due schedule (sorted set)  KEYS[12] last seen assignee
# KEYS[13] when the contact last wrote (a WhatsApp conversation's 24-hour window)
# ARGV[1] stored message, open (see above)  ARGV[2] queue TTL s  ARGV[3] max queue length
# ARGV[4] quiet window s  ARGV[5] max wait s (ARGV[13] "fixed": the window counts from the
# batch's first fragment; else it slides, capped by the max wait)  ARGV[6] seen TTL s
# ARGV[7] conversation id  ARGV[8] "1" if KEYS[4] is a real delivery id
# ARGV[9] the conversation's status in the payload  ARGV[10] account id
# ARGV[11] how long the last seen status and assignee are kept (s)
# ARGV[12] the message id to place the message by (a message moved in from the
# local spool goes before the first queued message with a higher Chatwoot id;
# the stored JSON starts with {"id":N), or '' to append. Such a message was answered
# 202 already: the queue's cap (ARGV[3]) never refuses it (it is counted instead).
# ARGV[13] window mode  ARGV[14] the assignee in the payload  ARGV[15] '1' where
# assignments count (observe, above)  ARGV[16] how long a handoff marker lasts (s)
# ARGV[17] the most conversations of the company that may hold messages at once, queued
# or in flight (KEYS[5]'s size): past it a message of another one is refused "busy",
# so one company cannot fill the Redis it shares (a spooled message, answered 202
# already, never is).  ARGV[18] '1' when the bot drafts for the agents (BOT_MODE=draft):
# it drafts whoever holds the conversation, so a human holder does not refuse the message.
# ARGV[19] '1' to note the message's arrival in KEYS[13] (a WhatsApp conversation, the
# window checked): kept 30 days.
# Who holds the conversation is observed first (_OWNERSHIP): a message the bot does
# not hold is counted as ignored and answered "handoff".
# The message's conversation is (re)scheduled in KEYS[11] at its batch's due time;
# the webhook publishes nothing: a dispatcher in the workers claims due entries.
# Returns {status, queue length, lease holder or '', seconds until due}
# where status is "queued", "duplicate", "full", "busy" or "handoff".
ENQUEUE = (
    _OWNERSHIP
    + """
local queue, lease, seen_message, seen_delivery = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local conversations, stats, handoff, sessions = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local session_accounts, status_key, due_schedule, assignee_key = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local contact_wrote = KEYS[13]
local stored, queue_ttl, max_len, window = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_wait, seen_ttl, conversation, real_delivery = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local status, account, keep_ttl, place_by = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local mode, assignee, assignments, handoff_ttl = ARGV[13], ARGV[14], ARGV[15], ARGV[16]
local most_waiting, drafts, notes_window = ARGV[17], ARGV[18], ARGV[19]
local holder = observe(status_key, assignee_key, handoff, stats, status, '0', assignee, '0', assignments,
                       keep_ttl, handoff_ttl)
if holder ~= MARKER.BOT and drafts ~= '1' then
  redis.call('HINCRBY', stats, @webhooks_ignored@, 1)
  return {'handoff', 0, '', '0'}
end
if redis.call('EXISTS', seen_message) == 1 or
   (real_delivery == '1' and redis.call('EXISTS', seen_delivery) == 1) then
  redis.call('HINCRBY', stats, @webhooks_duplicate@, 1)
  return {'duplicate', 0, '', '0'}
end
local len = redis.call('LLEN', queue)
if len >= tonumber(max_len) then
  if place_by == '' then
    redis.call('HINCRBY', stats, @webhooks_rejected_429@, 1)
    return {'full', len, '', '0'}
  end
  redis.call('HINCRBY', stats, @spooled_over_cap@, 1)
end
if place_by == '' and redis.call('SISMEMBER', conversations, conversation) == 0
   and redis.call('SCARD', conversations) >= tonumber(most_waiting) then
  redis.call('HINCRBY', stats, @webhooks_rejected_busy@, 1)
  return {'busy', redis.call('SCARD', conversations), '', '0'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local entry = stored .. string.format('%.6f', now) .. '}'
local before = nil
if place_by ~= '' then
  local mine = tonumber(place_by)
  for _, item in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    local id = tonumber(string.match(item, '^{"id":(%d+)'))
    if id and id > mine then before = item; break end
  end
end
if before then
  redis.call('LINSERT', queue, 'BEFORE', before, entry)
  len = redis.call('LLEN', queue)
else
  len = redis.call('RPUSH', queue, entry)
end
redis.call('EXPIRE', queue, queue_ttl)
redis.call('SET', seen_message, '1', 'EX', seen_ttl)
if real_delivery == '1' then redis.call('SET', seen_delivery, '1', 'EX', seen_ttl) end
redis.call('SADD', conversations, conversation)
redis.call('HINCRBY', stats, @webhooks_queued@, 1)
redis.call('ZADD', sessions, math.floor(now), conversation)
if notes_window == '1' then redis.call('SET', contact_wrote, string.format('%.3f', now), 'EX', 2592000) end
redis.call('HSET', session_accounts, conversation, account)
local first = now
if len > 1 then
  local at = tonumber(string.match(redis.call('LINDEX', queue, 0), '"received_at":([%d%.]+)}$'))
  if at and at < now then first = at end
end
local due = first + tonumber(window)
if mode ~= 'fixed' then due = math.min(now + tonumber(window), first + tonumber(max_wait)) end
redis.call('ZADD', due_schedule, due, conversation)
return {'queued', len, redis.call('GET', lease) or '', string.format('%.3f', due - now)}
"""
)

# A contact's message changed (message_updated: an edit, Chatwoot's own transcript of a
# voice note, a deletion) while it may still wait in its batch: replace it there,
# keeping its arrival time, or remove it; and have the batch looked at again now (the
# drainer decides when it closes). A message no longer queued — taken into a batch,
# answered, or never queued — is left alone: an update never starts a second turn.
# KEYS[1] queue  KEYS[2] due schedule  KEYS[3] stats hash
# ARGV[1] message id  ARGV[2] the updated stored message, open (ENQUEUE's form), or ''
# to remove it  ARGV[3] conversation id
# Returns 'replaced', 'removed' or 'gone'.
UPDATE_QUEUED = """
local queue, due_schedule, stats = KEYS[1], KEYS[2], KEYS[3]
local message_id, updated, conversation = ARGV[1], ARGV[2], ARGV[3]
local prefix = '{"id":' .. message_id .. ','
for index, item in ipairs(redis.call('LRANGE', queue, 0, -1)) do
  if string.sub(item, 1, #prefix) == prefix then
    local result = 'removed'
    if updated == '' then
      redis.call('LREM', queue, 1, item)
    else
      local at = string.match(item, '"received_at":([%d%.]+)}$') or '0'
      redis.call('LSET', queue, index - 1, updated .. at .. '}')
      result = 'replaced'
    end
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    local due = redis.call('ZSCORE', due_schedule, conversation)
    if not due or tonumber(due) > now then redis.call('ZADD', due_schedule, now, conversation) end
    redis.call('HINCRBY', stats, @messages_updated@, 1)
    return result
  end
end
redis.call('HINCRBY', stats, @webhooks_ignored@, 1)
return 'gone'
"""


class Enqueued(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # the message (or the delivery) was seen before
    FULL = "full"  # the conversation's queue is at its limit
    BUSY = "busy"  # the company has MAX_CONVERSATIONS_WAITING conversations waiting
    HANDOFF = "handoff"  # a human holds the conversation


@dataclass(frozen=True)
class EnqueueResult:
    status: Enqueued
    length: int
    holder: str  # the lease holder, '' when none
    due_in_seconds: float  # when the batch is due (the dispatcher hands it to a drain task)

    @classmethod
    def decode(cls, raw: list[Any]) -> EnqueueResult:
        return cls(Enqueued(str(raw[0])), int(raw[1]), str(raw[2]), float(raw[3]))


class Updated(StrEnum):
    REPLACED = "replaced"  # the edit or the transcript: the bot sees the message as it is now
    REMOVED = "removed"  # deleted before its batch was taken
    GONE = "gone"  # not waiting (taken, answered, never queued): nothing changes


class IntakeScripts:
    """The intake scripts, registered on one Redis client, each called by one method."""

    def __init__(self, client: redis.Redis) -> None:
        self._enqueue = _register(client, ENQUEUE)
        self._update_queued = _register(client, UPDATE_QUEUED)

    def enqueue(
        self,
        settings: Settings,
        company: CompanyConfig,
        message: StoredMessage,
        delivery_id: str | None,
        ordered: bool = False,
        due_now: bool = False,
    ) -> Call[EnqueueResult]:
        """``due_now``: the batch is due at once (a command such as a handoff keyword
        does not wait for the window)."""
        cid, conv = company.company_id, message.conversation_id
        seen = message.seen
        return Call(
            self._enqueue,
            [
                keys.queue(cid, conv),
                keys.lease(cid, conv),
                keys.seen_message(cid, message.id),
                keys.seen_delivery(cid, delivery_id or "-"),
                keys.conversation_index(cid),
                keys.stats(cid),
                keys.handoff(cid, conv),
                keys.sessions(cid),
                keys.session_accounts(cid),
                keys.status(cid, conv),
                keys.due(cid),
                keys.assignee(cid, conv),
                keys.contact_wrote(cid, conv),
            ],
            [
                message.open_json(),
                settings.queue_ttl_seconds,
                company.max_queue_per_conversation,
                0 if due_now else company.first_window,
                company.batch_max_wait_seconds,
                settings.seen_ttl_seconds,
                conv,
                "1" if delivery_id else "0",
                seen.status,
                message.account_id,
                company.status_ttl_seconds,
                str(message.id) if ordered else "",
                company.batch_window_mode,
                seen.assignee,
                _bit(company.bot_owns_pending),
                company.handoff_ttl_seconds,
                company.max_conversations_waiting,
                _bit(company.drafts),
                _bit(company.checks_window(message.channel)),
            ],
            EnqueueResult.decode,
        )

    def update_queued(self, company: str, update: MessageUpdate) -> Call[Updated]:
        """Apply a ``message_updated`` to its message while it waits in its batch."""
        message, conv = update.message, update.conversation_id
        return Call(
            self._update_queued,
            [keys.queue(company, conv), keys.due(company), keys.stats(company)],
            [message.id, "" if update.deleted else message.open_json(), conv],
            Updated,
        )
