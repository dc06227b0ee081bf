"""The reply ledger's scripts (``app.drain.ledger``): an answer stored before anything is
posted, unless newer fragments supersede it (STORE_ANSWER), each part marked pending
and then sent (MARK_PART, RECORD_SENT), a voice note's transcript kept across attempts
(STORE_TRANSCRIPT), and the turns the ``openai`` bot remembers (REMEMBER_TURN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from app.store import keys
from app.store.scripts.core import Call, _checked, _flag, _held, _register

__all__ = [
    "MARK_PART",
    "RECORD_SENT",
    "REMEMBER_TURN",
    "STORE_ANSWER",
    "STORE_TRANSCRIPT",
    "LedgerScripts",
    "StoreResult",
]


# The bot has answered: store its answer with the batch before anything is
# posted (invariant 9), unless fragments arrived while it thought: then they
# join the batch in processing and the answer, now stale, is not stored.
# KEYS[1] lease  KEYS[2] ledger  KEYS[3] queue  KEYS[4] processing
# ARGV[1] run id  ARGV[2] answer field  ARGV[3] answer JSON
# ARGV[4] most newer fragments to take (0: do not look)  ARGV[5..] message fields
# (each set to the answer field: which answer covers which message)
# Returns false without the lease, {'newer', messages...} or {'stored'}.
STORE_ANSWER = """
local lease, ledger, queue, processing = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id, answer_field, answer, most_newer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', lease) ~= run_id then return false end
local most = tonumber(most_newer)
if most > 0 then
  local items = redis.call('LRANGE', queue, 0, most - 1)
  if #items > 0 then
    redis.call('RPUSH', processing, unpack(items))
    redis.call('LTRIM', queue, #items, -1)
    return {'newer', unpack(items)}
  end
end
redis.call('HSET', ledger, answer_field, answer)
for i = 5, #ARGV do redis.call('HSET', ledger, ARGV[i], answer_field) end
return {'stored'}
"""

# Just before a reply part's POST: mark it pending, only while the run holds
# the lease (a run that lost it posts nothing more).
# KEYS[1] lease  KEYS[2] ledger  KEYS[3] own pending digests
# ARGV[1] run id  ARGV[2] part field  ARGV[3] pending value  ARGV[4] content digest
# ARGV[5] digests TTL s
# Returns 1 if marked, false without the lease.
MARK_PART = """
local lease, ledger, own_pending = KEYS[1], KEYS[2], KEYS[3]
local run_id, part_field, pending, digest = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local digests_ttl = ARGV[5]
if redis.call('GET', lease) ~= run_id then return false end
redis.call('HSET', ledger, part_field, pending)
redis.call('SADD', own_pending, digest)
redis.call('EXPIRE', own_pending, digests_ttl)
return 1
"""

# Just after a reply part's POST: record it sent, only over the pending value
# this run wrote (compare-and-set; true whether or not the run still holds the
# lease, since the part *was* posted), mark its Chatwoot id as ours, and note the
# turn (an outgoing message: the contact's next message answers it, app/batching/pace.py).
# KEYS[1] ledger  KEYS[2] own-reply marker of the id  KEYS[3] stats hash  KEYS[4] turns
# ARGV[1] part field  ARGV[2] expected pending value  ARGV[3] sent value
# ARGV[4] own-reply marker TTL s, or '' when Chatwoot gave no id  ARGV[5] conversation id
# ARGV[6] the marker's value: '1', or the part's text (BOT_CONTEXT "quoted": a contact
# who quotes it is shown what was quoted)
# Returns 1 if recorded, 0 if the part's state had changed.
RECORD_SENT = """
local ledger, own_reply, stats, turns = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local part_field, expected, sent, own_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local conversation, own_value = ARGV[5], ARGV[6]
local t = redis.call('TIME')
redis.call('HSET', turns, conversation, string.format('%d.%06d', t[1], t[2]))
if own_ttl ~= '' then redis.call('SET', own_reply, own_value, 'EX', own_ttl) end
if redis.call('HGET', ledger, part_field) ~= expected then return 0 end
redis.call('HSET', ledger, part_field, sent)
redis.call('HINCRBY', stats, @replies_sent@, 1)
return 1
"""

# A voice note's transcript (or why it has none), kept for the batch in processing so
# that a run of it again never fetches or pays for the note twice; only with the lease.
# KEYS[1] lease  KEYS[2] ledger hash
# ARGV[1] run id  ARGV[2] field (transcript:<message id>:<attachment index>)  ARGV[3] value
# Returns 1 if kept, false without the lease.
STORE_TRANSCRIPT = """
local lease, ledger = KEYS[1], KEYS[2]
local run_id, field, value = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', lease) ~= run_id then return false end
redis.call('HSET', ledger, field, value)
return 1
"""

# The openai backend's kept turns: append one exchange the contact received, once
# (a run that resumes the batch and posts what was left remembers it again: the
# tag, the answer's id, is already there).
# KEYS[1] the conversation's kept turns
# ARGV[1] the tag as it appears in a stored turn  ARGV[2] the user turn (JSON)
# ARGV[3] the assistant turn (JSON)  ARGV[4] most turns kept  ARGV[5] TTL s
# Returns 1 if appended, 0 if the exchange was kept already.
REMEMBER_TURN = """
local turns = KEYS[1]
local tag, user_turn, assistant_turn, most = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl = ARGV[5]
for _, turn in ipairs(redis.call('LRANGE', turns, 0, -1)) do
  if string.find(turn, tag, 1, true) then return 0 end
end
redis.call('RPUSH', turns, user_turn, assistant_turn)
redis.call('LTRIM', turns, -tonumber(most), -1)
redis.call('EXPIRE', turns, ttl)
return 1
"""


@dataclass(frozen=True)
class StoreResult:
    """STORE_ANSWER's answer: the answer is stored, or (``newer``) the fragments that
    arrived while the bot thought were moved into processing instead."""

    newer: list[str]

    @property
    def stored(self) -> bool:
        return not self.newer

    @classmethod
    def decode(cls, raw: Any) -> StoreResult:
        held = _held(raw)
        return cls([str(m) for m in held[1:]] if held[0] == "newer" else [])


class LedgerScripts:
    """The ledger scripts, registered on one Redis client, each called by one method."""

    def __init__(self, client: redis.Redis) -> None:
        self._store_answer = _register(client, STORE_ANSWER)
        self._mark_part = _register(client, MARK_PART)
        self._record_sent = _register(client, RECORD_SENT)
        self._store_transcript = _register(client, STORE_TRANSCRIPT)
        self._remember_turn = _register(client, REMEMBER_TURN)

    def store_answer(
        self,
        company: str,
        conversation: str,
        run_id: str,
        answer_field: str,
        answer_json: str,
        look_newer: int,
        message_fields: list[str],
    ) -> Call[StoreResult]:
        """Store the answer, unless fragments arrived while the bot thought."""
        return Call(
            self._store_answer,
            [
                keys.lease(company, conversation),
                keys.ledger(company, conversation),
                keys.queue(company, conversation),
                keys.processing(company, conversation),
            ],
            [run_id, answer_field, answer_json, look_newer, *message_fields],
            StoreResult.decode,
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
        remembered: str | None = None,
    ) -> Call[bool]:
        """True when recorded over ``pending`` (False: the part's state had changed).
        ``remembered``: the text the own-reply marker keeps (else it holds '1')."""
        own = keys.own_reply(company, message_id if message_id is not None else "unknown")
        ttl = own_ttl if message_id is not None else ""
        return Call(
            self._record_sent,
            [keys.ledger(company, conversation), own, keys.stats(company), keys.turns(company)],
            [part_field, pending, sent, ttl, conversation, remembered or "1"],
            _flag,
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
