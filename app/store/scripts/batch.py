"""One batch's way through ``webhook_processing``: claimed with an attempt counted
(CLAIM_BATCH), the attempt taken back (RELEASE_ATTEMPT) or its error noted
(NOTE_ERROR), the conversation handed to humans (MARK_HANDOFF), and its messages
leaving, answered or as a dead letter (COMPLETE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from app.store import keys
from app.store.scripts.core import Call, _checked, _flag, _held, _register
from app.store.scripts.ownership import _OWNERSHIP

__all__ = [
    "CLAIM_BATCH",
    "COMPLETE",
    "MARK_HANDOFF",
    "NOTE_ERROR",
    "RELEASE_ATTEMPT",
    "BatchScripts",
    "ClaimedBatch",
]


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
local queue, processing, lease, ledger = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_id, most, attempts_field, error_field = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local run_field = ARGV[5]
if redis.call('GET', lease) ~= run_id then return false end
local items = redis.call('LRANGE', processing, 0, -1)
if #items == 0 then
  items = redis.call('LRANGE', queue, 0, tonumber(most) - 1)
  if #items == 0 then return {0, ''} end
  redis.call('RPUSH', processing, unpack(items))
  redis.call('LTRIM', queue, #items, -1)
end
local before = redis.call('HINCRBY', ledger, attempts_field, 1) - 1
redis.call('HSET', ledger, run_field, '1')
return {before, redis.call('HGET', ledger, error_field) or '', unpack(items)}
"""

# A run that claimed a batch ends for a reason that is not the batch's own (Redis
# unreachable, its lease taken): take its attempt back, once, and only while it is
# still counted in this batch (a batch completed since, or reset by progress, no
# longer has the run's marker). No lease needed: it undoes only the run's own count.
# KEYS[1] ledger  ARGV[1] ledger field marking the run  ARGV[2] ledger field of attempts
# Returns 1 if the attempt was taken back, 0 if it was not counted (any more).
RELEASE_ATTEMPT = """
local ledger = KEYS[1]
local run_field, attempts_field = ARGV[1], ARGV[2]
if redis.call('HDEL', ledger, run_field) == 0 then return 0 end
if tonumber(redis.call('HGET', ledger, attempts_field) or '0') > 0 then
  redis.call('HINCRBY', ledger, attempts_field, -1)
end
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
local lease, ledger, stats = KEYS[1], KEYS[2], KEYS[3]
local run_id, error_field, error_text, attempts_field = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', lease) ~= run_id then return false end
redis.call('HSET', ledger, error_field, error_text)
redis.call('HINCRBY', stats, @batch_failures@, 1)
return tonumber(redis.call('HGET', ledger, attempts_field) or '0')
"""

# The bot asked for a human: the conversation is handed off (a reset keyword may
# undo it; a human's takeover may not) and counted, only while the run holds the lease.
# KEYS[1] lease  KEYS[2] handoff marker  KEYS[3] stats hash
# ARGV[1] run id  ARGV[2] TTL s
# Returns 1 if marked, false without the lease.
MARK_HANDOFF = (
    _OWNERSHIP
    + """
local lease, handoff, stats = KEYS[1], KEYS[2], KEYS[3]
local run_id, marker_ttl = ARGV[1], ARGV[2]
if redis.call('GET', lease) ~= run_id then return false end
move(handoff, stats, EVENT.BOT_HANDED_OFF, marker_ttl)
redis.call('HINCRBY', stats, @handoffs@, 1)
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
local processing, lease, ledger, dead_letters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stats = KEYS[5]
local run_id, letter, most_letters, attempts_field = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local error_field, run_prefix = ARGV[5], ARGV[6]
if redis.call('GET', lease) ~= run_id then return false end
local dropped = 0
if letter ~= '' then
  local length = redis.call('RPUSH', dead_letters, letter)
  redis.call('HINCRBY', stats, @dead_letters@, 1)
  local over = length - tonumber(most_letters)
  if over > 0 then
    redis.call('LTRIM', dead_letters, over, -1)
    redis.call('HINCRBY', stats, @dead_letters_dropped@, over)
    dropped = over
  end
end
for i = 7, #ARGV do redis.call('LREM', processing, 1, ARGV[i]) end
local left = redis.call('LLEN', processing)
if left == 0 then
  redis.call('DEL', ledger)
else
  redis.call('HDEL', ledger, attempts_field, error_field)
  for _, name in ipairs(redis.call('HKEYS', ledger)) do
    if string.sub(name, 1, #run_prefix) == run_prefix then redis.call('HDEL', ledger, name) end
  end
end
return {left, dropped}
"""


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


class BatchScripts:
    """The batch scripts, registered on one Redis client, each called by one method."""

    def __init__(self, client: redis.Redis) -> None:
        self._claim_batch = _register(client, CLAIM_BATCH)
        self._release_attempt = _register(client, RELEASE_ATTEMPT)
        self._note_error = _register(client, NOTE_ERROR)
        self._mark_handoff = _register(client, MARK_HANDOFF)
        self._complete = _register(client, COMPLETE)

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

    def note_error(self, company: str, conversation: str, run_id: str, error: str) -> Call[int]:
        """The batch's attempts after this failure (as NOTE_ERROR's header says)."""
        return Call(
            self._note_error,
            [keys.lease(company, conversation), keys.ledger(company, conversation), keys.stats(company)],
            [run_id, keys.LEDGER_ERROR, error, keys.LEDGER_ATTEMPTS],
            lambda raw: int(_held(raw)),
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
