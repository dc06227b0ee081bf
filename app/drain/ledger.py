"""The reply ledger: what the bot answered for the batch in processing, and what
of it was posted (invariant 9: one answer per batch).

One hash per conversation (``keys.ledger``), dropped when its batch leaves
processing:

=========================  ====================================================
``answer:<answer id>``     the bot's answer, JSON ``{"parts": [...], "handoff": b}``,
                           stored (lease-checked) before its first part is posted;
                           when the bot failed, the gateway's fallback in its
                           place with ``"failure"`` (the batch is dead-lettered
                           once the fallback is posted)
``msg:<message id>``       the field of the answer that covers this message
                           (``answer:<answer id>``): a resumed batch
                           posts that answer and never asks the bot again, however
                           what is left of the batch would be grouped now
``part:<answer id>:<i>``   ``pending:<unix time>`` just before part i's POST (the
                           time is for people; a read-back matches by id),
                           ``sent:<Chatwoot id>`` (or ``sent:``) after it
``transcript:<msg>:<i>``  attachment i's transcript (``text:…``) or why it has
                           none (``failed:…``): a voice note is fetched and
                           transcribed once per batch, however often it is run
``attempts`` / ``error``   runs that started handling the batch; the last failure
=========================  ====================================================

The answer id is the segment's first and last message ids: unique within a
conversation, since Chatwoot never reuses a message id.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import redis

from app.chatwoot.replies import Part, part_from_json, part_to_json
from app.conversation.own import OWN_PENDING_TTL_SECONDS, OWN_REPLY_TTL_SECONDS
from app.logs import mask_secrets
from app.store import keys
from app.store.scripts import Call, RoundTrip, Scripts
from app.store.scripts.ledger import StoreResult

__all__ = [
    "ATTEMPTS",
    "ERROR",
    "Ledger",
    "LedgerState",
    "StoredAnswer",
    "answer_field",
    "message_field",
    "part_field",
    "transcript_field",
]

ATTEMPTS, ERROR = keys.LEDGER_ATTEMPTS, keys.LEDGER_ERROR
ANSWER, PENDING, SENT = "answer:", "pending:", "sent:"
RECORD_PATIENCE_SECONDS = 60.0  # how long a posted part's record waits for Redis to come back

log = logging.getLogger(__name__)


def answer_field(answer_id: str) -> str:
    return f"{ANSWER}{answer_id}"


def message_field(message_id: int) -> str:
    return f"msg:{message_id}"


def part_field(answer_id: str, index: int) -> str:
    return f"part:{answer_id}:{index}"


def transcript_field(message_id: int, index: int) -> str:
    return f"transcript:{message_id}:{index}"


@dataclass(frozen=True)
class StoredAnswer:
    answer_id: str
    parts: tuple[Part, ...]  # kept whole, a rich part's choices and media too: a resumed run posts the same
    handoff: bool
    team: int | None = None  # the team a handoff assigns (the bot's "team", else HANDOFF_TEAM_ID)
    note: str = ""  # a private note for the humans (the bot's "note")
    failure: str = ""  # the bot failed: the parts are BOT_FALLBACK_MESSAGE, then a dead letter
    gateway: bool = False  # the gateway's own words in the bot's place (keyword handoff, away, budget)

    @property
    def by_bot(self) -> bool:
        """Did the bot say it (a bot that keeps turns remembers it once posted)?"""
        return not (self.failure or self.gateway)

    def to_json(self) -> str:
        data: dict[str, object] = {"parts": [part_to_json(p) for p in self.parts], "handoff": self.handoff}
        if self.team is not None:
            data["team"] = self.team
        if self.note:
            data["note"] = self.note
        if self.failure:
            data["failure"] = self.failure
        if self.gateway:
            data["gateway"] = True
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, answer_id: str, raw: str) -> StoredAnswer:
        data = json.loads(raw)
        team = data.get("team")
        return cls(
            answer_id,
            tuple(part_from_json(p) for p in data["parts"]),
            bool(data["handoff"]),
            team if isinstance(team, int) else None,
            str(data.get("note") or ""),
            str(data.get("failure") or ""),
            data.get("gateway") is True,
        )


@dataclass(frozen=True)
class LedgerState:
    """The ledger as read with a claim."""

    fields: dict[str, str]

    def answer_covering(self, message_id: int) -> StoredAnswer | None:
        field = self.fields.get(message_field(message_id))
        raw = self.fields.get(field) if field else None
        if field is None or raw is None or not field.startswith(ANSWER):
            return None
        return StoredAnswer.from_json(field[len(ANSWER) :], raw)

    def store(self, answer: StoredAnswer, message_ids: list[int]) -> None:
        """What ``Ledger.store_answer`` wrote, in this copy (the run reads it, not Redis)."""
        self.fields[answer_field(answer.answer_id)] = answer.to_json()
        self.fields.update({message_field(m): answer_field(answer.answer_id) for m in message_ids})

    def transcript(self, message_id: int, index: int) -> str | None:
        return self.fields.get(transcript_field(message_id, index))

    def part(self, answer_id: str, index: int) -> str | None:
        return self.fields.get(part_field(answer_id, index))

    def set_part(self, answer_id: str, index: int, state: str) -> None:
        self.fields[part_field(answer_id, index)] = state


def is_pending(state: str | None) -> bool:
    """Was the part being posted when its run stopped (its outcome unknown)?"""
    return bool(state) and state.startswith(PENDING)


def is_sent(state: str | None) -> bool:
    return bool(state) and state.startswith(SENT)


class Ledger:
    """Lease-checked writes to one conversation's ledger by one run."""

    def __init__(self, client: redis.Redis, scripts: Scripts, company: str, conversation: str, run_id: str):
        self._client, self._scripts = client, scripts
        self._company, self._conversation, self._run = company, conversation, run_id
        self.key = keys.ledger(company, conversation)

    def read(self) -> LedgerState:
        return LedgerState(dict(self._client.hgetall(self.key)))

    def store_answer(
        self,
        answer: StoredAnswer,
        message_ids: list[int],
        look_newer: int,
        round_trip: RoundTrip | None = None,
    ) -> StoreResult:
        """Store ``answer`` for ``message_ids``; or, when fragments arrived while the bot
        thought (``look_newer`` > 0), move them into processing instead (``newer``).
        ``round_trip``: other commands to send in the same round trip (run first)."""
        batch = round_trip or RoundTrip(self._client)
        batch.add(
            self._scripts.ledger.store_answer(
                self._company,
                self._conversation,
                self._run,
                answer_field(answer.answer_id),
                answer.to_json(),
                look_newer,
                [message_field(m) for m in message_ids],
            )
        )
        return batch.execute()[-1]

    def keep_transcript(self, state: LedgerState, message_id: int, index: int, value: str) -> None:
        """Keep a voice note's transcript for the batch (raises ``LeaseLost``), in ``state`` too."""
        field = transcript_field(message_id, index)
        self._scripts.ledger.store_transcript(
            self._company, self._conversation, self._run, field, value
        ).run()
        state.fields[field] = value

    def mark_pending(self, answer_id: str, index: int, since: float, digest: str) -> str:
        """Mark a part pending just before its POST; the value written (raises ``LeaseLost``)."""
        value = f"{PENDING}{since}"
        self._scripts.ledger.mark_part(
            self._company,
            self._conversation,
            self._run,
            part_field(answer_id, index),
            value,
            digest,
            OWN_PENDING_TTL_SECONDS,
        ).run()
        return value

    def record_sent(
        self,
        answer_id: str,
        index: int,
        pending: str,
        message_id: int | None,
        patience: float = RECORD_PATIENCE_SECONDS,
        remembered: str | None = None,
    ) -> bool:
        """Record a part posted (over the pending value this run saw); mark its id ours
        (the marker keeping ``remembered``, the part's text, when a quote may need it).

        The part *was* posted: this record is what keeps a later run from posting it
        again (with an agent-bot token, which cannot read the conversation back, a
        part left pending is posted again). So a Redis that stopped answering right
        after the POST is waited for, up to ``patience`` seconds, rather than given
        up on at once. The record needs no lease (it is a compare-and-set on this
        run's own pending mark), and no other run can start while Redis is away.
        """
        call = self._scripts.ledger.record_sent(
            self._company,
            self._conversation,
            part_field(answer_id, index),
            pending,
            f"{SENT}{message_id if message_id is not None else ''}",
            message_id,
            OWN_REPLY_TTL_SECONDS,
            remembered,
        )
        return self._patiently(call, patience, "posted reply not recorded yet")

    def release_attempt(self, patience: float = RECORD_PATIENCE_SECONDS) -> bool:
        """Take back the attempt this run's claim counted: the run ends for a reason that is
        not the batch's own (Redis unreachable, its lease taken), and a batch must not be
        dead-lettered as failing for that. Needs no lease (it undoes only the run's own
        count), so it waits for a Redis that stopped answering, up to ``patience``."""
        call = self._scripts.batch.release_attempt(self._company, self._conversation, self._run)
        return self._patiently(call, patience, "attempt not taken back yet")

    def _patiently(self, call: Call[bool], patience: float, what: str) -> bool:
        """Run ``call``, retrying while Redis does not answer, up to ``patience`` seconds."""
        deadline, pause = time.monotonic() + patience, 0.05
        while True:
            try:
                return call.run()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning(
                    "%s conversation=%s error=%s: retrying", what, self._conversation, type(exc).__name__
                )
                time.sleep(pause)
                pause = min(1.0, pause * 2)

    def note_error(self, error: str) -> int:
        """Keep the batch's latest failure (for its dead letter, if it keeps failing); the
        batch's attempts now (this run's included, unless its progress reset them)."""
        return self._scripts.batch.note_error(
            self._company, self._conversation, self._run, mask_secrets(error)[:500]
        ).run()

    def ours(self, message_ids: list[int]) -> set[int]:
        """Which of these Chatwoot message ids the gateway itself created."""
        if not message_ids:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.exists(keys.own_reply(self._company, message_id))
        return {m for m, found in zip(message_ids, pipe.execute(), strict=True) if found}
