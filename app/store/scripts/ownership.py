"""Who holds a conversation, as Redis applies it: the transition table of
``app.conversation.ownership`` rendered into Lua (``_OWNERSHIP``, shared with the intake and batch
scripts), the payloads observed (OBSERVE), a human's reply told from the gateway's own
(AGENT_REPLY), events no payload carries (APPLY_EVENT) and idle bot sessions
(EXPIRE_SESSIONS)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import redis

from app.conversation.ownership import Event, Holder, Seen, holder_of
from app.store import keys
from app.store.scripts.core import Call, _bit, _register

if TYPE_CHECKING:
    from app.settings import CompanyConfig

__all__ = ["AGENT_REPLY", "APPLY_EVENT", "EXPIRE_SESSIONS", "OBSERVE", "OwnershipScripts", "Sender"]


# Shared by the scripts that see who holds a conversation (app/conversation/ownership.py): the
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

# One event that no payload carries (a reset keyword, a session expiring) applied to
# who holds the conversation, by the table (app/conversation/ownership.py).
# KEYS[1] handoff marker  KEYS[2] stats hash  ARGV[1] event  ARGV[2] marker TTL s
# Returns the marker after ('' while the bot holds it).
APPLY_EVENT = (
    _OWNERSHIP
    + """
local handoff, stats = KEYS[1], KEYS[2]
local event, marker_ttl = ARGV[1], ARGV[2]
return move(handoff, stats, event, marker_ttl)
"""
)

# An agent's public reply: the gateway's own message coming back (app/conversation/own.py), or a
# human taking over. What the payload says of the status and assignee is observed
# first (_OWNERSHIP).
# KEYS[1] own-reply marker of the message id  KEYS[2] own pending digests
# KEYS[3] handoff marker  KEYS[4] stats hash  KEYS[5] last seen status
# KEYS[6] last seen assignee  KEYS[7] turns
# ARGV[1] digest of the content  ARGV[2] how long a handoff marker lasts (s, > 0)
# ARGV[3] the conversation's status in the payload  ARGV[4] how long the last seen
# status and assignee are kept (s)  ARGV[5] the assignee in the payload
# ARGV[6] '1' where assignments count  ARGV[7] conversation id
# A human's reply is a turn too (app/batching/pace.py); the gateway's own noted its turn when posted.
# Returns "own" or "takeover".
AGENT_REPLY = (
    _OWNERSHIP
    + """
local own_reply, own_pending, handoff, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local status_key, assignee_key, turns = KEYS[5], KEYS[6], KEYS[7]
local digest, handoff_ttl, status, keep_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local assignee, assignments, conversation = ARGV[5], ARGV[6], ARGV[7]
observe(status_key, assignee_key, handoff, stats, status, '0', assignee, '0', assignments,
        keep_ttl, handoff_ttl)
if redis.call('EXISTS', own_reply) == 1 or redis.call('SISMEMBER', own_pending, digest) == 1 then
  return 'own'
end
local t = redis.call('TIME')
redis.call('HSET', turns, conversation, string.format('%d.%06d', t[1], t[2]))
move(handoff, stats, EVENT.HUMAN_REPLIED, handoff_ttl)
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
# app/batching/pace.py: an automation's, a template)  ARGV[10] conversation id
# Returns {marker before, marker after} ('' while the bot holds it).
OBSERVE = (
    _OWNERSHIP
    + """
local status_key, assignee_key, handoff, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local turns = KEYS[5]
local status, status_changed, assignee, assignee_changed = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local assignments, keep_ttl, handoff_ttl, count_ignored = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local is_turn, conversation = ARGV[9], ARGV[10]
local before = redis.call('GET', handoff) or MARKER.BOT
local after = observe(status_key, assignee_key, handoff, stats, status, status_changed,
                      assignee, assignee_changed, assignments, keep_ttl, handoff_ttl)
if count_ignored == '1' then redis.call('HINCRBY', stats, @webhooks_ignored@, 1) end
if is_turn == '1' then
  local t = redis.call('TIME')
  redis.call('HSET', turns, conversation, string.format('%d.%06d', t[1], t[2]))
end
return {before, after}
"""
)

# Take up to ARGV[2] sessions idle for ARGV[1] seconds or more (by Redis's
# clock) out of the sessions set, once each.
# KEYS[1] sessions zset  KEYS[2] session accounts hash
# ARGV[1] idle seconds  ARGV[2] most to take
# Returns {conversation, account id, ...}.
EXPIRE_SESSIONS = """
local sessions, accounts = KEYS[1], KEYS[2]
local idle_seconds, most = ARGV[1], ARGV[2]
local cutoff = tonumber(redis.call('TIME')[1]) - tonumber(idle_seconds)
local idle = redis.call('ZRANGEBYSCORE', sessions, '-inf', cutoff, 'LIMIT', 0, most)
local result = {}
for _, conv in ipairs(idle) do
  redis.call('ZREM', sessions, conv)
  table.insert(result, conv)
  table.insert(result, redis.call('HGET', accounts, conv) or '')
  redis.call('HDEL', accounts, conv)
end
return result
"""


class Sender(StrEnum):
    OWN = "own"  # the gateway's own reply coming back
    TAKEOVER = "takeover"  # a human replied: the bot is silent


class OwnershipScripts:
    """The ownership scripts, registered on one Redis client, each called by one method."""

    def __init__(self, client: redis.Redis) -> None:
        self._observe = _register(client, OBSERVE)
        self._agent_reply = _register(client, AGENT_REPLY)
        self._apply_event = _register(client, APPLY_EVENT)
        self._expire_sessions = _register(client, EXPIRE_SESSIONS)

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
        """Who holds the conversation after ``event`` (app/conversation/ownership.py's table)."""
        return Call(
            self._apply_event,
            [keys.handoff(company, conversation), keys.stats(company)],
            [event.name, ttl],
            holder_of,
        )

    def expire_sessions(self, company: str, idle_seconds: int, most: int) -> Call[list[tuple[str, str]]]:
        """(conversation, account id or '') of each idle session taken."""
        return Call(
            self._expire_sessions,
            [keys.sessions(company), keys.session_accounts(company)],
            [idle_seconds, most],
            lambda raw: list(zip(raw[0::2], raw[1::2], strict=True)),
        )
