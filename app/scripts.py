"""Every multi-key state change of the gateway, as one Lua script each.

A script is registered once per Redis client (``Scripts(redis)``) and called
by EVALSHA through one typed method of ``Scripts`` (the end of this module),
which builds its KEYS (``app.keys``) and ARGV and decodes its reply into a named
value. No script builds a key. Each header documents KEYS and ARGV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from app import keys
from app.errors import LeaseLost
from app.metrics import render_counters
from app.ownership import Event, Holder, Seen, holder_of, lua_tables

if TYPE_CHECKING:
    from app.payload import MessageUpdate, StoredMessage
    from app.settings import CompanyConfig, Settings

__all__ = [
    "Call",
    "ClaimedBatch",
    "Dispatch",
    "DueClaim",
    "EnqueueResult",
    "Enqueued",
    "Rescue",
    "RoundTrip",
    "Scripts",
    "Sender",
    "Updated",
]

# Shared by the scripts that see who holds a conversation (app/ownership.py): the
# transition table rendered from Python (NEXT, STATUS_EVENT, MARKER, EVENT, ASSIGNEE),
# ``move`` to apply one event to the holder's marker, and ``observe`` to record the
# status and assignee a payload carries and apply the events their changes make.
# A payload's status: '' when it does not say; explicit '1' when the event is itself
# a status change. Its assignee: '' when it does not say, else as
# ownership.assignee_of writes it; explicit '1' when the event says it changed.
# Assignment events apply only where the bot owns pending conversations
# (assignments '1': an Agent Bot inbox). Each returns the holder's marker after.
_OWNERSHIP = """
@ownership@
local function move(handoff, stats, event, ttl)
  local marker = redis.call('GET', handoff) or MARKER.BOT
  local after = NEXT[marker .. '|' .. event]
  if after == nil or after == marker then return marker end
  if after == MARKER.BOT then
    redis.call('DEL', handoff)
    redis.call('HINCRBY', stats, @takeovers_ended@, 1)
  else
    redis.call('SET', handoff, after, 'EX', ttl)
    if after == MARKER.HUMAN then redis.call('HINCRBY', stats, @agent_takeovers@, 1) end
  end
  return after
end

local function observe(status_key, assignee_key, handoff, stats, status, explicit,
                       assignee, assignee_explicit, assignments, keep_ttl, ttl)
  local events = {}
  local current = status
  if status ~= '' then
    local last = redis.call('GET', status_key)
    redis.call('SET', status_key, status, 'EX', keep_ttl)
    if STATUS_EVENT[status] and (explicit == '1' or (last and last ~= status)) then
      table.insert(events, STATUS_EVENT[status])
    end
  else
    current = redis.call('GET', status_key) or ''
  end
  if assignee ~= '' then
    local last = redis.call('GET', assignee_key)
    redis.call('SET', assignee_key, assignee, 'EX', keep_ttl)
    if assignments == '1' and (assignee_explicit == '1' or (last and last ~= assignee)) then
      if string.sub(assignee, 1, #ASSIGNEE.HUMAN) == ASSIGNEE.HUMAN then
        table.insert(events, EVENT.HUMAN_ASSIGNED)
      elseif string.sub(assignee, 1, #ASSIGNEE.BOT) == ASSIGNEE.BOT then
        table.insert(events, EVENT.BOT_ASSIGNED)
      elseif assignee == ASSIGNEE.NOBODY and current == ASSIGNEE.BOTS_STATUS then
        table.insert(events, EVENT.UNASSIGNED_PENDING)
      end
    end
  end
  local marker = redis.call('GET', handoff) or MARKER.BOT
  for _, event in ipairs(events) do marker = move(handoff, stats, event, ttl) end
  return marker
end
"""

# The clock of every due time and session is Redis's own (TIME), never a web
# or worker clock: ARGV[1] is the stored message's JSON up to its last member,
# '"received_at":', and the script completes it with the arrival time.
# KEYS[1] queue  KEYS[2] lease  KEYS[3] seen message  KEYS[4] seen delivery
# KEYS[5] conversation index  KEYS[6] stats hash  KEYS[7] handoff marker
# KEYS[8] sessions zset  KEYS[9] session accounts hash  KEYS[10] last seen status
# KEYS[11] due schedule (sorted set)  KEYS[12] last seen assignee
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
# already, never is).
# Who holds the conversation is observed first (_OWNERSHIP): a message the bot does
# not hold is counted as ignored and answered "handoff".
# The message's conversation is (re)scheduled in KEYS[11] at its batch's due time;
# the webhook publishes nothing: a dispatcher in the workers claims due entries.
# Returns {status, queue length, lease holder or '', seconds until due}
# where status is "queued", "duplicate", "full", "busy" or "handoff".
ENQUEUE = (
    _OWNERSHIP
    + """
local holder = observe(KEYS[10], KEYS[12], KEYS[7], KEYS[6], ARGV[9], '0', ARGV[14], '0', ARGV[15],
                       ARGV[11], ARGV[16])
if holder ~= MARKER.BOT then
  redis.call('HINCRBY', KEYS[6], @webhooks_ignored@, 1)
  return {'handoff', 0, '', '0'}
end
if redis.call('EXISTS', KEYS[3]) == 1 or
   (ARGV[8] == '1' and redis.call('EXISTS', KEYS[4]) == 1) then
  redis.call('HINCRBY', KEYS[6], @webhooks_duplicate@, 1)
  return {'duplicate', 0, '', '0'}
end
local len = redis.call('LLEN', KEYS[1])
if len >= tonumber(ARGV[3]) then
  if ARGV[12] == '' then
    redis.call('HINCRBY', KEYS[6], @webhooks_rejected_429@, 1)
    return {'full', len, '', '0'}
  end
  redis.call('HINCRBY', KEYS[6], @spooled_over_cap@, 1)
end
if ARGV[12] == '' and redis.call('SISMEMBER', KEYS[5], ARGV[7]) == 0
   and redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[17]) then
  redis.call('HINCRBY', KEYS[6], @webhooks_rejected_busy@, 1)
  return {'busy', redis.call('SCARD', KEYS[5]), '', '0'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local entry = ARGV[1] .. string.format('%.6f', now) .. '}'
local before = nil
if ARGV[12] ~= '' then
  local mine = tonumber(ARGV[12])
  for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local id = tonumber(string.match(item, '^{"id":(%d+)'))
    if id and id > mine then before = item; break end
  end
end
if before then
  redis.call('LINSERT', KEYS[1], 'BEFORE', before, entry)
  len = redis.call('LLEN', KEYS[1])
else
  len = redis.call('RPUSH', KEYS[1], entry)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[6])
if ARGV[8] == '1' then redis.call('SET', KEYS[4], '1', 'EX', ARGV[6]) end
redis.call('SADD', KEYS[5], ARGV[7])
redis.call('HINCRBY', KEYS[6], @webhooks_queued@, 1)
redis.call('ZADD', KEYS[8], math.floor(now), ARGV[7])
redis.call('HSET', KEYS[9], ARGV[7], ARGV[10])
local first = now
if len > 1 then
  local at = tonumber(string.match(redis.call('LINDEX', KEYS[1], 0), '"received_at":([%d%.]+)}$'))
  if at and at < now then first = at end
end
local due = first + tonumber(ARGV[4])
if ARGV[13] ~= 'fixed' then due = math.min(now + tonumber(ARGV[4]), first + tonumber(ARGV[5])) end
redis.call('ZADD', KEYS[11], due, ARGV[7])
return {'queued', len, redis.call('GET', KEYS[2]) or '', string.format('%.3f', due - now)}
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
local prefix = '{"id":' .. ARGV[1] .. ','
for index, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, #prefix) == prefix then
    local result = 'removed'
    if ARGV[2] == '' then
      redis.call('LREM', KEYS[1], 1, item)
    else
      local at = string.match(item, '"received_at":([%d%.]+)}$') or '0'
      redis.call('LSET', KEYS[1], index - 1, ARGV[2] .. at .. '}')
      result = 'replaced'
    end
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    local due = redis.call('ZSCORE', KEYS[2], ARGV[3])
    if not due or tonumber(due) > now then redis.call('ZADD', KEYS[2], now, ARGV[3]) end
    redis.call('HINCRBY', KEYS[3], @messages_updated@, 1)
    return result
  end
end
redis.call('HINCRBY', KEYS[3], @webhooks_ignored@, 1)
return 'gone'
"""

# Compare-and-set of the lease: hand it from one holder to another.
# KEYS[1] lease  ARGV[1] expected holder  ARGV[2] new holder  ARGV[3] TTL ms
# Returns 1 if the lease now names ARGV[2], else 0.
HAND_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# A task starting: the lease names the published task (its id) until the task
# starts; starting turns it into the id of this one run (task id + '#' + a
# random token), so a second delivery of the same task id finds a run, not its
# id, and exits. A free lease (its holder died, it expired) is taken.
# KEYS[1] lease  ARGV[1] task id  ARGV[2] run id  ARGV[3] TTL ms
# Returns 1 if the run holds the lease, else 0.
START_RUN = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# The heartbeat: extend the lease of a run that still holds it.
# KEYS[1] lease  ARGV[1] run id  ARGV[2] TTL ms
# Returns 1 if renewed, 0 if the run no longer holds it.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# One event that no payload carries (a reset keyword, a session expiring) applied to
# who holds the conversation, by the table (app/ownership.py).
# KEYS[1] handoff marker  KEYS[2] stats hash  ARGV[1] event  ARGV[2] marker TTL s
# Returns the marker after ('' while the bot holds it).
APPLY_EVENT = (
    _OWNERSHIP
    + """
return move(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"""
)

# Move the next batch into processing, unless a leftover batch is there, and
# count the attempt: every run that starts handling a batch counts one, so a
# batch that kills its worker or raises every time is seen (BATCH_MAX_ATTEMPTS).
# The run's marker says its attempt is counted: a run that ends for a reason
# that is not the batch's own (Redis unreachable, its lease taken) takes it back
# (RELEASE_ATTEMPT); a worker that dies cannot, so its attempt stays.
# KEYS[1] queue  KEYS[2] processing  KEYS[3] lease  KEYS[4] ledger
# ARGV[1] run id  ARGV[2] most messages to move  ARGV[3] ledger field of attempts
# ARGV[4] ledger field of the last error  ARGV[5] ledger field marking this run
# Returns false if the run does not hold the lease, else {attempts before this
# one, last error or '', messages...} (no messages: nothing to do).
CLAIM_BATCH = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
if #items == 0 then
  items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
  if #items == 0 then return {0, ''} end
  redis.call('RPUSH', KEYS[2], unpack(items))
  redis.call('LTRIM', KEYS[1], #items, -1)
end
local before = redis.call('HINCRBY', KEYS[4], ARGV[3], 1) - 1
redis.call('HSET', KEYS[4], ARGV[5], '1')
return {before, redis.call('HGET', KEYS[4], ARGV[4]) or '', unpack(items)}
"""

# A run that claimed a batch ends for a reason that is not the batch's own (Redis
# unreachable, its lease taken): take its attempt back, once, and only while it is
# still counted in this batch (a batch completed since, or reset by progress, no
# longer has the run's marker). No lease needed: it undoes only the run's own count.
# KEYS[1] ledger  ARGV[1] ledger field marking the run  ARGV[2] ledger field of attempts
# Returns 1 if the attempt was taken back, 0 if it was not counted (any more).
RELEASE_ATTEMPT = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[2], -1)
end
return 1
"""

# The bot has answered: store its answer with the batch before anything is
# posted (invariant 9), unless fragments arrived while it thought: then they
# join the batch in processing and the answer, now stale, is not stored.
# KEYS[1] lease  KEYS[2] ledger  KEYS[3] queue  KEYS[4] processing
# ARGV[1] run id  ARGV[2] answer field  ARGV[3] answer JSON
# ARGV[4] most newer fragments to take (0: do not look)  ARGV[5..] message fields
# (each set to the answer field: which answer covers which message)
# Returns false without the lease, {'newer', messages...} or {'stored'}.
STORE_ANSWER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local most = tonumber(ARGV[4])
if most > 0 then
  local items = redis.call('LRANGE', KEYS[3], 0, most - 1)
  if #items > 0 then
    redis.call('RPUSH', KEYS[4], unpack(items))
    redis.call('LTRIM', KEYS[3], #items, -1)
    return {'newer', unpack(items)}
  end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
for i = 5, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], ARGV[2]) end
return {'stored'}
"""

# Just before a reply part's POST: mark it pending, only while the run holds
# the lease (a run that lost it posts nothing more).
# KEYS[1] lease  KEYS[2] ledger  KEYS[3] own pending digests
# ARGV[1] run id  ARGV[2] part field  ARGV[3] pending value  ARGV[4] content digest
# ARGV[5] digests TTL s
# Returns 1 if marked, false without the lease.
MARK_PART = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return 1
"""

# Just after a reply part's POST: record it sent, only over the pending value
# this run wrote (compare-and-set; true whether or not the run still holds the
# lease, since the part *was* posted), mark its Chatwoot id as ours, and note the
# turn (an outgoing message: the contact's next message answers it, app/pace.py).
# KEYS[1] ledger  KEYS[2] own-reply marker of the id  KEYS[3] stats hash  KEYS[4] turns
# ARGV[1] part field  ARGV[2] expected pending value  ARGV[3] sent value
# ARGV[4] own-reply marker TTL s, or '' when Chatwoot gave no id  ARGV[5] conversation id
# Returns 1 if recorded, 0 if the part's state had changed.
RECORD_SENT = """
local t = redis.call('TIME')
redis.call('HSET', KEYS[4], ARGV[5], string.format('%d.%06d', t[1], t[2]))
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], '1', 'EX', ARGV[4]) end
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[3], @replies_sent@, 1)
return 1
"""

# A failure of the batch in processing: keep it as the batch's last error (its
# dead letter names it if the batch keeps failing) and count it, only while the
# run holds the lease.
# KEYS[1] lease  KEYS[2] ledger  KEYS[3] stats hash
# ARGV[1] run id  ARGV[2] ledger field of the last error  ARGV[3] the error
# ARGV[4] ledger field of attempts
# Returns the batch's attempts now (this run's included, unless progress it made
# reset them), or false without the lease.
NOTE_ERROR = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[3], @batch_failures@, 1)
return tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')
"""

# A voice note's transcript (or why it has none), kept for the batch in processing so
# that a run of it again never fetches or pays for the note twice; only with the lease.
# KEYS[1] lease  KEYS[2] ledger hash
# ARGV[1] run id  ARGV[2] field (transcript:<message id>:<attachment index>)  ARGV[3] value
# Returns 1 if kept, false without the lease.
STORE_TRANSCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# The bot asked for a human: the conversation is handed off (a reset keyword may
# undo it; a human's takeover may not) and counted, only while the run holds the lease.
# KEYS[1] lease  KEYS[2] handoff marker  KEYS[3] stats hash
# ARGV[1] run id  ARGV[2] TTL s
# Returns 1 if marked, false without the lease.
MARK_HANDOFF = (
    _OWNERSHIP
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
move(KEYS[2], KEYS[3], EVENT.BOT_HANDED_OFF, ARGV[2])
redis.call('HINCRBY', KEYS[3], @handoffs@, 1)
return 1
"""
)

# Messages whose reply was sent (or that were dead-lettered) leave processing.
# Progress resets the batch's attempts (and the markers of the runs counted in
# them); an empty batch drops its ledger. The dead-letter list keeps the newest
# ARGV[3] entries; older ones are dropped and counted.
# KEYS[1] processing  KEYS[2] lease  KEYS[3] ledger  KEYS[4] dead letters
# KEYS[5] stats hash
# ARGV[1] run id  ARGV[2] dead letter JSON or ""  ARGV[3] most dead letters kept
# ARGV[4] ledger field of attempts  ARGV[5] ledger field of the last error
# ARGV[6] prefix of the ledger fields marking counted runs  ARGV[7..] stored messages
# Returns false without the lease, else {messages left in processing, dead letters dropped}.
COMPLETE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
local dropped = 0
if ARGV[2] ~= '' then
  local length = redis.call('RPUSH', KEYS[4], ARGV[2])
  redis.call('HINCRBY', KEYS[5], @dead_letters@, 1)
  local over = length - tonumber(ARGV[3])
  if over > 0 then
    redis.call('LTRIM', KEYS[4], over, -1)
    redis.call('HINCRBY', KEYS[5], @dead_letters_dropped@, over)
    dropped = over
  end
end
for i = 7, #ARGV do redis.call('LREM', KEYS[1], 1, ARGV[i]) end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then
  redis.call('DEL', KEYS[3])
else
  redis.call('HDEL', KEYS[3], ARGV[4], ARGV[5])
  for _, name in ipairs(redis.call('HKEYS', KEYS[3])) do
    if string.sub(name, 1, #ARGV[6]) == ARGV[6] then redis.call('HDEL', KEYS[3], name) end
  end
end
return {left, dropped}
"""

# Release the lease, only by its holder and only when nothing is left to do
# (a due entry left by messages this run already answered goes too).
# KEYS[1] lease  KEYS[2] queue  KEYS[3] processing  KEYS[4] conversation index
# KEYS[5] due schedule
# ARGV[1] run id  ARGV[2] conversation id
# Returns 1 released, 0 more work (keep draining), false not the holder.
RELEASE_IF_EMPTY = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('LLEN', KEYS[3]) > 0 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
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
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > now then return {0, '', 0} end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1, ARGV[2], 0} end
return {2, redis.call('GET', KEYS[2]) or '', redis.call('PTTL', KEYS[2])}
"""

# A run that must wait (the batch is not due yet, a retry after a failure, its
# time is up): schedule the conversation at now + ARGV[3] and give up the lease;
# the dispatcher hands it to a fresh task then. Nothing waits in a countdown task.
# KEYS[1] lease  KEYS[2] due schedule
# ARGV[1] run id  ARGV[2] conversation id  ARGV[3] seconds from now (Redis's clock)
# Returns 1 deferred, false not the holder.
DEFER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[3]), ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""

# Sweeper: a conversation with work but neither a live lease nor a due entry (its
# holder died, a publish was lost) is scheduled now; the dispatcher takes it.
# KEYS[1] lease  KEYS[2] queue  KEYS[3] processing  KEYS[4] conversation index
# KEYS[5] due schedule
# ARGV[1] conversation id
# Returns 1 rescheduled, 0 a live lease or a due entry exists, -1 nothing to do.
RESCUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('LLEN', KEYS[2]) == 0 and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[1])
  return -1
end
if redis.call('ZSCORE', KEYS[5], ARGV[1]) then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[5], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])
return 1
"""


# Re-queue one dead letter, only if it is still in the list (compare-and-remove:
# two operators replaying at once re-queue it once).
# KEYS[1] dead letters  KEYS[2] the conversation's queue  KEYS[3] conversation index
# ARGV[1] the entry as read  ARGV[2] conversation id  ARGV[3] queue TTL s
# ARGV[4..] its stored messages, in order
# Returns the number of messages re-queued, or -1 if the entry was gone.
REPLAY_DEAD_LETTER = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return -1 end
if #ARGV < 4 then return 0 end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return #ARGV - 3
"""


# An agent's public reply: the gateway's own message coming back (app/own.py), or a
# human taking over. What the payload says of the status and assignee is observed
# first (_OWNERSHIP).
# KEYS[1] own-reply marker of the message id  KEYS[2] own pending digests
# KEYS[3] handoff marker  KEYS[4] stats hash  KEYS[5] last seen status
# KEYS[6] last seen assignee  KEYS[7] turns
# ARGV[1] digest of the content  ARGV[2] how long a handoff marker lasts (s, > 0)
# ARGV[3] the conversation's status in the payload  ARGV[4] how long the last seen
# status and assignee are kept (s)  ARGV[5] the assignee in the payload
# ARGV[6] '1' where assignments count  ARGV[7] conversation id
# A human's reply is a turn too (app/pace.py); the gateway's own noted its turn when posted.
# Returns "own" or "takeover".
AGENT_REPLY = (
    _OWNERSHIP
    + """
observe(KEYS[5], KEYS[6], KEYS[3], KEYS[4], ARGV[3], '0', ARGV[5], '0', ARGV[6], ARGV[4], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return 'own'
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[7], ARGV[7], string.format('%d.%06d', t[1], t[2]))
move(KEYS[3], KEYS[4], EVENT.HUMAN_REPLIED, ARGV[2])
return 'takeover'
"""
)

# Any other payload that says something of a conversation — a status event, a
# conversation_updated, a message the gateway ignores (an open conversation's, a
# private note, the bot's own reply) — observed: its status and assignee recorded,
# the events their changes make applied (_OWNERSHIP); the gateway's own
# toggle_status too. Optionally counted as an ignored webhook.
# KEYS[1] last seen status  KEYS[2] last seen assignee  KEYS[3] handoff marker
# KEYS[4] stats hash  KEYS[5] turns
# ARGV[1] status  ARGV[2] '1' if the event is itself a status change  ARGV[3] assignee
# ARGV[4] '1' if the event says the assignee changed  ARGV[5] '1' where assignments
# count  ARGV[6] how long the last seen status and assignee are kept (s)
# ARGV[7] how long a handoff marker lasts (s)  ARGV[8] '1' to count an ignored webhook
# ARGV[9] '1' if the payload is an outgoing message to the contact (a turn,
# app/pace.py: an automation's, a template)  ARGV[10] conversation id
# Returns {marker before, marker after} ('' while the bot holds it).
OBSERVE = (
    _OWNERSHIP
    + """
local before = redis.call('GET', KEYS[3]) or MARKER.BOT
local after = observe(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                      ARGV[6], ARGV[7])
if ARGV[8] == '1' then redis.call('HINCRBY', KEYS[4], @webhooks_ignored@, 1) end
if ARGV[9] == '1' then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[5], ARGV[10], string.format('%d.%06d', t[1], t[2]))
end
return {before, after}
"""
)

# The openai backend's kept turns: append one exchange the contact received, once
# (a run that resumes the batch and posts what was left remembers it again: the
# tag, the answer's id, is already there).
# KEYS[1] the conversation's kept turns
# ARGV[1] the tag as it appears in a stored turn  ARGV[2] the user turn (JSON)
# ARGV[3] the assistant turn (JSON)  ARGV[4] most turns kept  ARGV[5] TTL s
# Returns 1 if appended, 0 if the exchange was kept already.
REMEMBER_TURN = """
for _, turn in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.find(turn, ARGV[1], 1, true) then return 0 end
end
redis.call('RPUSH', KEYS[1], ARGV[2], ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


# Take up to ARGV[2] sessions idle for ARGV[1] seconds or more (by Redis's
# clock) out of the sessions set, once each.
# KEYS[1] sessions zset  KEYS[2] session accounts hash
# ARGV[1] idle seconds  ARGV[2] most to take
# Returns {conversation, account id, ...}.
EXPIRE_SESSIONS = """
local cutoff = tonumber(redis.call('TIME')[1]) - tonumber(ARGV[1])
local idle = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, ARGV[2])
local result = {}
for _, conv in ipairs(idle) do
  redis.call('ZREM', KEYS[1], conv)
  table.insert(result, conv)
  table.insert(result, redis.call('HGET', KEYS[2], conv) or '')
  redis.call('HDEL', KEYS[2], conv)
end
return result
"""


# The spend ceiling: take one bot call from today's budget, if any is left.
# KEYS[1] today's bot-call count  ARGV[1] calls allowed per day (0: no ceiling)
# ARGV[2] TTL s of the count
# Returns the calls used today, this one included; or -1 when the budget is spent
# (nothing taken).
SPEND_BOT_CALL = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if limit > 0 and used >= limit then return -1 end
used = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return used
"""


# Operator purge of one conversation: its waiting and in-flight messages go.
# KEYS[1] queue  KEYS[2] processing  KEYS[3] ledger  KEYS[4] conversation index
# ARGV[1] conversation id
# Returns the number of messages removed. A drainer holding the lease finds
# nothing left and releases it.
PURGE = """
local count = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return count
"""


# -- the typed layer -------------------------------------------------------------
# Every script is called through one method of ``Scripts`` below: the method
# builds its KEYS and ARGV (in the order its header documents) and names how its
# reply decodes. Scripts that check the run's lease return false when the run no
# longer holds it, and ``_held`` turns that into ``LeaseLost``: the one place a
# script's answer raises it.

T = TypeVar("T")


def _held(result: Any) -> Any:
    if result is None:
        raise LeaseLost()
    return result


def _checked(result: Any) -> None:
    _held(result)


def _flag(result: Any) -> bool:
    return bool(result)


def _bit(value: bool) -> str:
    return "1" if value else "0"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One script call, ready to run on its own (``run``) or in a ``RoundTrip``."""

    script: Script
    keys: list[str]
    args: list[Any]
    decode: Callable[[Any], T]

    def run(self) -> T:
        """Run it (EVALSHA on the client the script was registered with)."""
        return self.decode(self.script(keys=self.keys, args=self.args))


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


@dataclass(frozen=True)
class ClaimedBatch:
    """CLAIM_BATCH: the batch in processing (a leftover one, or the next one)."""

    attempts: int  # runs that started handling it before this one
    last_error: str  # '' when none
    messages: list[str]  # empty: nothing to do

    @classmethod
    def decode(cls, raw: Any) -> ClaimedBatch:
        attempts, error, *messages = _held(raw)
        return cls(int(attempts), str(error), [str(m) for m in messages])


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


class Updated(StrEnum):
    REPLACED = "replaced"  # the edit or the transcript: the bot sees the message as it is now
    REMOVED = "removed"  # deleted before its batch was taken
    GONE = "gone"  # not waiting (taken, answered, never queued): nothing changes


class Sender(StrEnum):
    OWN = "own"  # the gateway's own reply coming back
    TAKEOVER = "takeover"  # a human replied: the bot is silent


def render(source: str) -> str:
    """A script as registered: its ``@counter@`` names rendered from ``app.metrics.Stat``
    and ``@ownership@`` from ``app.ownership`` (the transition table)."""
    return render_counters(source.replace("@ownership@", _OWNERSHIP_TABLES))


def _register(client: redis.Redis, source: str) -> Script:
    """Register a script as ``render`` makes it."""
    return client.register_script(render(source))


_OWNERSHIP_TABLES = lua_tables()


class Scripts:
    """The Lua scripts, registered on one Redis client, each called by one method."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._enqueue = _register(client, ENQUEUE)
        self._update_queued = _register(client, UPDATE_QUEUED)
        self._hand_over = _register(client, HAND_OVER)
        self._start_run = _register(client, START_RUN)
        self._renew = _register(client, RENEW)
        self._apply_event = _register(client, APPLY_EVENT)
        self._claim_batch = _register(client, CLAIM_BATCH)
        self._release_attempt = _register(client, RELEASE_ATTEMPT)
        self._store_answer = _register(client, STORE_ANSWER)
        self._mark_part = _register(client, MARK_PART)
        self._record_sent = _register(client, RECORD_SENT)
        self._note_error = _register(client, NOTE_ERROR)
        self._store_transcript = _register(client, STORE_TRANSCRIPT)
        self._mark_handoff = _register(client, MARK_HANDOFF)
        self._complete = _register(client, COMPLETE)
        self._release_if_empty = _register(client, RELEASE_IF_EMPTY)
        self._rescue = _register(client, RESCUE)
        self._claim_due = _register(client, CLAIM_DUE)
        self._defer = _register(client, DEFER)
        self._replay_dead_letter = _register(client, REPLAY_DEAD_LETTER)
        self._agent_reply = _register(client, AGENT_REPLY)
        self._observe = _register(client, OBSERVE)
        self._expire_sessions = _register(client, EXPIRE_SESSIONS)
        self._remember_turn = _register(client, REMEMBER_TURN)
        self._purge = _register(client, PURGE)
        self._spend_bot_call = _register(client, SPEND_BOT_CALL)

    # -- the webhook -----------------------------------------------------------

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

    def observe(
        self,
        company: CompanyConfig,
        conversation: str,
        seen: Seen,
        count_ignored: bool = False,
        turn: bool = False,
    ) -> Call[tuple[Holder, Holder]]:
        """(holder before, holder after) the payload that said ``seen``; ``turn``: the
        payload is an outgoing message to the contact."""
        cid = company.company_id
        return Call(
            self._observe,
            [
                keys.status(cid, conversation),
                keys.assignee(cid, conversation),
                keys.handoff(cid, conversation),
                keys.stats(cid),
                keys.turns(cid),
            ],
            [
                *seen.args(),
                _bit(company.bot_owns_pending),
                company.status_ttl_seconds,
                company.handoff_ttl_seconds,
                _bit(count_ignored),
                _bit(turn),
                conversation,
            ],
            lambda raw: (holder_of(raw[0]), holder_of(raw[1])),
        )

    def agent_reply(
        self, company: CompanyConfig, conversation: str, message_id: int | str, digest: str, seen: Seen
    ) -> Call[Sender]:
        cid = company.company_id
        return Call(
            self._agent_reply,
            [
                keys.own_reply(cid, message_id),
                keys.own_pending(cid, conversation),
                keys.handoff(cid, conversation),
                keys.stats(cid),
                keys.status(cid, conversation),
                keys.assignee(cid, conversation),
                keys.turns(cid),
            ],
            [
                digest,
                company.handoff_ttl_seconds,
                seen.status,
                company.status_ttl_seconds,
                seen.assignee,
                _bit(company.bot_owns_pending),
                conversation,
            ],
            Sender,
        )

    def apply_event(self, company: str, conversation: str, event: Event, ttl: int) -> Call[Holder]:
        """Who holds the conversation after ``event`` (app/ownership.py's table)."""
        return Call(
            self._apply_event,
            [keys.handoff(company, conversation), keys.stats(company)],
            [event.name, ttl],
            holder_of,
        )

    # -- the lease -------------------------------------------------------------

    def start_run(self, lease: str, task_id: str, run_id: str, ttl_ms: int) -> Call[bool]:
        """True when the run holds the lease."""
        return Call(self._start_run, [lease], [task_id, run_id, ttl_ms], _flag)

    def renew(self, lease: str, run_id: str, ttl_ms: int) -> Call[bool]:
        """True when renewed (False: the run no longer holds the lease)."""
        return Call(self._renew, [lease], [run_id, ttl_ms], _flag)

    def hand_over(self, lease: str, holder: str, fresh: str, ttl_ms: int) -> Call[bool]:
        """True when the lease went from ``holder`` to ``fresh``."""
        return Call(self._hand_over, [lease], [holder, fresh, ttl_ms], _flag)

    # -- the schedule ----------------------------------------------------------

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

    # -- a run -----------------------------------------------------------------

    def claim_batch(self, company: str, conversation: str, run_id: str, most: int) -> Call[ClaimedBatch]:
        return Call(
            self._claim_batch,
            [
                keys.queue(company, conversation),
                keys.processing(company, conversation),
                keys.lease(company, conversation),
                keys.ledger(company, conversation),
            ],
            [run_id, most, keys.LEDGER_ATTEMPTS, keys.LEDGER_ERROR, keys.LEDGER_RUN + run_id],
            ClaimedBatch.decode,
        )

    def release_attempt(self, company: str, conversation: str, run_id: str) -> Call[bool]:
        """True when the run's counted attempt was taken back."""
        return Call(
            self._release_attempt,
            [keys.ledger(company, conversation)],
            [keys.LEDGER_RUN + run_id, keys.LEDGER_ATTEMPTS],
            _flag,
        )

    def store_answer(
        self,
        company: str,
        conversation: str,
        run_id: str,
        answer_field: str,
        answer_json: str,
        look_newer: int,
        message_fields: list[str],
    ) -> Call[list[str]]:
        """The fragments that arrived while the bot thought (moved into processing,
        the answer not stored), or [] when the answer was stored."""
        return Call(
            self._store_answer,
            [
                keys.lease(company, conversation),
                keys.ledger(company, conversation),
                keys.queue(company, conversation),
                keys.processing(company, conversation),
            ],
            [run_id, answer_field, answer_json, look_newer, *message_fields],
            lambda raw: [str(m) for m in raw[1:]] if _held(raw)[0] == "newer" else [],
        )

    def mark_part(
        self,
        company: str,
        conversation: str,
        run_id: str,
        part_field: str,
        pending: str,
        digest: str,
        ttl: int,
    ) -> Call[None]:
        return Call(
            self._mark_part,
            [
                keys.lease(company, conversation),
                keys.ledger(company, conversation),
                keys.own_pending(company, conversation),
            ],
            [run_id, part_field, pending, digest, ttl],
            _checked,
        )

    def record_sent(
        self,
        company: str,
        conversation: str,
        part_field: str,
        pending: str,
        sent: str,
        message_id: int | None,
        own_ttl: int,
    ) -> Call[bool]:
        """True when recorded over ``pending`` (False: the part's state had changed)."""
        own = keys.own_reply(company, message_id if message_id is not None else "unknown")
        return Call(
            self._record_sent,
            [keys.ledger(company, conversation), own, keys.stats(company), keys.turns(company)],
            [part_field, pending, sent, own_ttl if message_id is not None else "", conversation],
            _flag,
        )

    def note_error(self, company: str, conversation: str, run_id: str, error: str) -> Call[int]:
        """The batch's attempts after this failure (as NOTE_ERROR's header says)."""
        return Call(
            self._note_error,
            [keys.lease(company, conversation), keys.ledger(company, conversation), keys.stats(company)],
            [run_id, keys.LEDGER_ERROR, error, keys.LEDGER_ATTEMPTS],
            lambda raw: int(_held(raw)),
        )

    def store_transcript(
        self, company: str, conversation: str, run_id: str, field: str, value: str
    ) -> Call[None]:
        return Call(
            self._store_transcript,
            [keys.lease(company, conversation), keys.ledger(company, conversation)],
            [run_id, field, value],
            _checked,
        )

    def mark_handoff(self, company: str, conversation: str, run_id: str, ttl: int) -> Call[None]:
        return Call(
            self._mark_handoff,
            [keys.lease(company, conversation), keys.handoff(company, conversation), keys.stats(company)],
            [run_id, ttl],
            _checked,
        )

    def complete(
        self,
        company: str,
        conversation: str,
        run_id: str,
        messages: list[str],
        dead_letter: str = "",
        dead_letters_kept: int = 0,
    ) -> Call[int]:
        """The messages leave processing (``dead_letter``: JSON of their dead letter);
        the number of old dead letters dropped to keep ``dead_letters_kept``."""
        return Call(
            self._complete,
            [
                keys.processing(company, conversation),
                keys.lease(company, conversation),
                keys.ledger(company, conversation),
                keys.dead_letters(company),
                keys.stats(company),
            ],
            [
                run_id,
                dead_letter,
                dead_letters_kept,
                keys.LEDGER_ATTEMPTS,
                keys.LEDGER_ERROR,
                keys.LEDGER_RUN,
                *messages,
            ],
            lambda raw: int(_held(raw)[1]),
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

    def spend_bot_call(self, company: str, day: str, per_day: int) -> Call[int | None]:
        """Take one bot call from ``day``'s budget: the calls used with it, or None
        when ``per_day`` are used up (0: no ceiling, the call is only counted)."""
        return Call(
            self._spend_bot_call,
            [keys.bot_calls_day(company, day)],
            [per_day, 2 * 24 * 3600],
            lambda raw: None if int(raw) < 0 else int(raw),
        )

    # -- operators and housekeeping ----------------------------------------------

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

    def remember_turn(
        self, company: str, conversation: str, tag: str, user: str, assistant: str, most: int, ttl: int
    ) -> Call[bool]:
        """True when the exchange was appended (False: kept already)."""
        return Call(
            self._remember_turn,
            [keys.bot_history(company, conversation)],
            [tag, user, assistant, most, ttl],
            _flag,
        )

    def expire_sessions(self, company: str, idle_seconds: int, most: int) -> Call[list[tuple[str, str]]]:
        """(conversation, account id or '') of each idle session taken."""
        return Call(
            self._expire_sessions,
            [keys.sessions(company), keys.session_accounts(company)],
            [idle_seconds, most],
            lambda raw: list(zip(raw[0::2], raw[1::2], strict=True)),
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


class RoundTrip:
    """Commands and script calls sent in one round trip (a non-transactional pipeline).

    ``execute`` returns every reply in order, a script's decoded (so a lost
    lease raises ``LeaseLost`` there). redis-py checks ``SCRIPT EXISTS`` before
    every pipeline holding a script — a second round trip. Here a script goes
    as a bare EVALSHA; if Redis lost its script cache (a restart), that one
    call comes back NOSCRIPT, did nothing, and is run again on its own, which
    loads the script.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pipe = client.pipeline(transaction=False)
        self._calls: dict[int, Call[Any]] = {}

    def add(self, call: Call[Any]) -> None:
        self._calls[len(self.pipe)] = call
        self.pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)

    def execute(self) -> list[Any]:
        results = self.pipe.execute(raise_on_error=False)
        for index, call in self._calls.items():
            if isinstance(results[index], NoScriptError):
                results[index] = call.script(keys=call.keys, args=call.args, client=self.client)
        for result in results:
            if isinstance(result, Exception):
                raise result
        for index, call in self._calls.items():
            results[index] = call.decode(results[index])
        return results
