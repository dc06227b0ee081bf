"""Draining one conversation: the body of the ``gateway.drain`` task.

One run of ``Drainer.run`` (one delivery of a task, holding the lease under its
own run id, ``app.lease``):
1. resumes a leftover ``webhook_processing`` batch first (a drainer died);
2. otherwise waits for the batch to close — not by sleeping, nor in a
   countdown task: it schedules the conversation at the due time (by Redis's
   clock) in ``<company>:webhook_due`` and gives up the lease (DEFER); the
   dispatcher hands it to a fresh task then, and a solo worker serves other
   conversations meanwhile;
3. claims the batch atomically into ``webhook_processing`` (counting an
   attempt), asks the bot once per segment, stores the answer in the reply
   ledger (``app.ledger``) before posting it, posts it part by part, and only
   then lets the messages leave ``webhook_processing``; a resumed batch posts
   the stored answer and never asks the bot again;
4. releases the lease in the same script that checks the queue is empty.
Every write after the bot call is a Lua script that checks the run's lease,
and nothing is posted unless the run can prove its lease (a fresh renewal).
A batch that fails ``BATCH_MAX_ATTEMPTS`` times is dead-lettered
(``stage: "crash"``) and the conversation moves on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import redis

from app import keys
from app.analytics import LoggedFragment, count_gaps, log_fragments, prior_window
from app.batching import Segment, due_at, segments
from app.bots import Bot, BotReply, KeepsTurns, ask_bot, bot_request
from app.chatwoot import Replier
from app.errors import BotError, ChatwootError, LeaseLost
from app.lease import Run, lease_keeper, new_run_id
from app.ledger import Ledger, LedgerState, StoredAnswer
from app.logs import mask_secrets
from app.metrics import Stat, count_into
from app.ownership import Seen
from app.pace import PACE_TTL_SECONDS, Pace, learned_window, spans_a_turn
from app.payload import StoredMessage, read_stored, received_at
from app.posting import Poster
from app.redis_client import redis_now
from app.replay import TURN
from app.replies import reply_parts
from app.scripts import Call, RoundTrip, Scripts
from app.settings import CompanyConfig, Settings
from app.smart import Reading, read_message, smart_window
from app.transcribe import Budget, with_transcripts
from app.typing_indicator import Typing

__all__ = ["MAX_BATCHES_PER_RUN", "Drainer", "Outcome"]

log = logging.getLogger(__name__)
MAX_BATCHES_PER_RUN = 20
BOT_OPENS = "open"  # the status a handoff gives the conversation (Chatwoot's toggle_status)
CHATWOOT_TRANSCRIBES = "chatwoot"  # TRANSCRIBE_BACKEND: Chatwoot's own transcripts, waited for
RETRY_CAP_SECONDS = 30.0

Unit = tuple[Segment, StoredAnswer | None]  # messages, and the answer stored for them if any


class Outcome(StrEnum):
    """How a run ended (logged, returned by the task)."""

    RELEASED = "released"  # nothing left: the lease is free
    DEFERRED = "deferred"  # scheduled again (a batch not yet due, a retry, time up)
    NOT_HOLDER = "not-holder"  # another run holds the conversation: nothing done
    LEASE_LOST = "lease-lost"  # the lease went to another run mid-way: stopped


def _arrivals(batch: list[str]) -> list[float]:
    # an unreadable entry is dead-lettered later; it has no arrival to count
    return [t for t in map(received_at, batch) if t is not None]


def _reading(message: StoredMessage | None) -> Reading:
    """How a stored message reads (``app.smart.read``); an unreadable one as plain."""
    if message is None:
        return Reading.PLAIN
    return read_message(message.content, [a.file_type for a in message.attachments])


def _subject(message: StoredMessage | None, conversation: str) -> str:
    """Whose pace a stored message tells: its contact's, else its conversation's."""
    contact = message.contact.get("id") if message and isinstance(message.contact, dict) else None
    return f"contact-{contact}" if contact is not None else f"conversation-{conversation}"


def _logged(
    batch: list[str],
    messages: list[StoredMessage | None],
    conversation: str,
    previous: float | None,
    turn_at: float | None,
) -> list[LoggedFragment]:
    """The batch (raw, and as read by ``read_stored``) as the fragment log keeps it: whose,
    when, how it reads; and the turn before it (an answer went out after ``previous``, the
    latest fragment logged), so a replay of the log splits the burst there too."""
    logged = []
    for raw, message in zip(batch, messages, strict=True):
        at = message.received_at if message else received_at(raw)
        if at is None:
            continue
        subject = _subject(message, conversation)
        if not logged and previous is not None and spans_a_turn(previous, at, turn_at):
            logged.append(LoggedFragment(subject, turn_at, TURN))  # type: ignore[arg-type]
        logged.append(LoggedFragment(subject, at, _reading(message).value))
    return logged


def _untranscribed(message: StoredMessage | None) -> bool:
    """Does the message hold a voice note Chatwoot has not transcribed yet?"""
    return message is not None and any(
        a.file_type == "audio" and not a.transcribed_text for a in message.attachments
    )


def _float_or_none(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


@dataclass
class Drainer:
    client: redis.Redis
    scripts: Scripts
    settings: Settings
    company: CompanyConfig
    conversation: str
    task_id: str
    bot: Bot
    replier: Replier
    clock: Callable[[], float] = time.time  # only for timestamps shown to people (dead letters)
    transcribe: Callable[[str, float], str] | None = None  # TRANSCRIBE_BACKEND (app.transcribe), or none
    run_id: str = field(default="", init=False)
    _run: Run | None = field(default=None, init=False)
    _ledger: Ledger | None = field(default=None, init=False)
    _state: LedgerState = field(default_factory=lambda: LedgerState({}), init=False)
    _budget: Budget | None = field(default=None, init=False)  # the batch's transcription budget
    _started: float = field(default=0.0, init=False)  # monotonic start of the run
    _previous: float | None = field(default=None, init=False)  # latest arrival counted for gaps
    _turn_at: float | None = field(default=None, init=False)  # latest outgoing message (app.pace)
    _pace: tuple[str, Pace] | None = field(default=None, init=False)  # (key, pace), learned/smart
    _handoff: bool | None = field(default=None, init=False)  # read with the claim, for its first unit
    _typing_shown: bool = field(default=False, init=False)  # "typing" went on during this batch
    _claimed: bool = field(default=False, init=False)  # this run claimed a batch (counted an attempt)

    @property
    def _cid(self) -> str:
        return self.company.company_id

    def _key(self, fn: Callable[[str, str], str]) -> str:
        return fn(self._cid, self.conversation)

    # -- the run ------------------------------------------------------------------

    def run(self) -> Outcome:
        """Drain what is due; return what happened (for logs and tests)."""
        lease = self._key(keys.lease)
        self.run_id = new_run_id(self.task_id)
        ttl_ms = int(self.settings.lease_ttl_seconds * 1000)
        self._started = time.monotonic()
        start = self.scripts.start_run(lease, self.task_id, self.run_id, ttl_ms)
        held, wait = self._seconds_until_due(start)  # one round trip: take the lease, look at the queue
        if not held:
            return Outcome.NOT_HOLDER
        keeper = lease_keeper(
            self.client, self.scripts, self.settings.lease_ttl_seconds, self.settings.run_max_seconds
        )
        self._run = keeper.keep(lease, self.run_id, self._started)
        self._ledger = Ledger(self.client, self.scripts, self._cid, self.conversation, self.run_id)
        try:
            return self._drain(wait)
        except LeaseLost:
            log.warning(
                "lease lost company=%s conversation=%s task=%s run=%s",
                self._cid,
                self.conversation,
                self.task_id,
                self.run_id,
            )
            self._release_attempt()
            return Outcome.LEASE_LOST
        except redis.RedisError:
            self._release_attempt()
            raise
        finally:
            keeper.drop(self._run)

    def _release_attempt(self) -> None:
        """The run stops for a reason that is not its batch's (Redis unreachable, its lease
        taken): the attempt its claim counted is taken back, so Redis blips never
        dead-letter a healthy batch as failing. A run past RUN_MAX_SECONDS keeps its
        attempt: a batch that hangs every run is the batch's own doing."""
        assert self._run is not None and self._ledger is not None
        if not self._claimed or self._run.overran:
            return
        try:
            self._ledger.release_attempt()
        except redis.RedisError as exc:
            log.error(
                "attempt not taken back company=%s conversation=%s run=%s error=%s",
                self._cid,
                self.conversation,
                self.run_id,
                type(exc).__name__,
            )

    def _drain(self, wait: float | None) -> Outcome:
        for _ in range(MAX_BATCHES_PER_RUN):
            if wait is None:
                if self._release_if_empty():
                    return Outcome.RELEASED
            elif wait > 0:
                return self._defer(wait)
            elif time.monotonic() - self._started > self.settings.run_max_seconds / 2:
                return self._defer(0)  # a fresh run goes on: a healthy run never meets its deadline
            else:
                batch, attempts, error = self._claim()
                if batch:
                    retry_in = self._process_guarded(batch, attempts, error)
                    if retry_in is not None:
                        return self._defer(retry_in)
                    if self._release_if_empty():  # the common end: one round trip
                        return Outcome.RELEASED
            wait = self._seconds_until_due()[1]
        return self._defer(0)

    def _seconds_until_due(self, start: Call[bool] | None = None) -> tuple[bool, float | None]:
        """(lease held, wait): wait is None when nothing waits, 0 when a batch is due
        (or left over), else the seconds until it is, by Redis's clock. ``start``
        (START_RUN) takes the lease in the same round trip."""
        paced = self.company.paced
        transcripts = self.company.transcribe_backend == CHATWOOT_TRANSCRIBES  # wait for Chatwoot's
        batch = RoundTrip(self.client)
        if start:
            batch.add(start)
        pipe = batch.pipe
        pipe.llen(self._key(keys.processing))
        pipe.lindex(self._key(keys.queue), 0)
        pipe.lindex(self._key(keys.queue), -1)
        pipe.hget(keys.last_fragment(self._cid), self.conversation)
        pipe.hget(keys.turns(self._cid), self.conversation)
        pipe.time()
        if paced or transcripts:
            pipe.lrange(self._key(keys.queue), 0, self.settings.batch_max_messages - 1)
        results = batch.execute()
        held = results.pop(0) if start else True
        leftover, first, last, previous, turn_at, (seconds, micros), *queued = results
        now = seconds + micros / 1e6
        self._previous, self._turn_at = _float_or_none(previous), _float_or_none(turn_at)
        if leftover:
            return held, 0.0
        if first is None:
            return held, None
        first_at, last_at = received_at(first), received_at(last)
        if first_at is None or last_at is None:
            return held, 0.0  # unreadable entry: claim it now so it is dead-lettered
        config = self.company
        smart = config.batch_window_mode == "smart"
        latest = read_stored(last) if config.handoff_keywords or smart else None  # read once
        if latest is not None and config.asks_for_a_human(latest):
            return held, 0.0  # a handoff keyword does not wait for the window
        window = config.batch_window_seconds
        if paced:
            window = self._paced_window(read_stored(first), latest, [*_arrivals(queued[0]), last_at])
        due = due_at(config.batch_window_mode, first_at, last_at, window, config.batch_max_wait_seconds)
        if transcripts and any(_untranscribed(read_stored(raw)) for raw in queued[0]):
            # Chatwoot's transcript arrives as message_updated (it replaces the note in the
            # queue and makes the batch due again); never past the max wait: then without text.
            due = max(due, first_at + config.batch_max_wait_seconds)
        return held, max(0.0, due - now)

    def _paced_window(
        self, first: StoredMessage | None, latest: StoredMessage | None, queued: list[float]
    ) -> float:
        """This contact's quiet period, from what is known of how they type (``app.pace``)
        and, in smart mode, from what the latest fragment says (``app.smart``)."""
        config = self.company
        _, pace = self._pace_of(_subject(first, self.conversation))
        prior = prior_window(self.client, self._cid, config.batch_window_seconds)
        low, high = config.batch_window_min_seconds, config.batch_window_max_seconds
        turn = self._turn_at
        if config.batch_window_mode == "smart":
            return smart_window(pace, queued, _reading(latest), prior, low, high, turn)
        return learned_window(pace, queued, prior, low, high, turn)

    def _pace_of(self, subject: str) -> tuple[str, Pace]:
        """The key and pace of ``subject`` (``_subject``; read once per contact and run)."""
        key = keys.pace(self._cid, subject)
        if self._pace is None or self._pace[0] != key:
            self._pace = (key, Pace.from_json(self.client.get(key)))
        return self._pace

    def _release_if_empty(self) -> bool:
        return self.scripts.release_if_empty(self._cid, self.conversation, self.run_id).run()

    def _defer(self, seconds: float) -> Outcome:
        """Schedule the conversation ``seconds`` from now (never more than the max wait)
        and give up the lease: the dispatcher hands it to a fresh task then."""
        seconds = min(seconds, self.company.batch_max_wait_seconds)
        self.scripts.defer(self._cid, self.conversation, self.run_id, seconds).run()
        return Outcome.DEFERRED

    # -- claiming ------------------------------------------------------------------

    def _claim(self) -> tuple[list[str], int, str]:
        """(batch, attempts before this one, last error): a leftover batch or the next one."""
        self._claimed = True  # before the call: its reply may be lost after it counted
        claimed = self.scripts.claim_batch(
            self._cid, self.conversation, self.run_id, self.settings.batch_max_messages
        ).run()
        if claimed.messages:
            self._count_claim(claimed.messages, append=False)
        return claimed.messages, claimed.attempts, claimed.last_error

    def _count_claim(self, batch: list[str], append: bool) -> None:
        """Batch size, fragment gaps and the contact's pace, with (for a new batch) what
        processing it needs to know — is a human on it, what the ledger holds — in one
        round trip."""
        arrivals = _arrivals(batch)
        pipe = self.client.pipeline(transaction=False)
        if not append:
            pipe.exists(self._key(keys.handoff), self._key(keys.paused))
            pipe.hgetall(self._key(keys.ledger))
            pipe.hincrby(keys.stats(self._cid), Stat.BATCHES, 1)
            count_into(pipe, self._cid, "gateway_batch_size_messages", len(batch))
        previous = self._previous
        self._previous = count_gaps(
            pipe, self._cid, self.conversation, self._previous, arrivals, self._turn_at
        )
        length, paced = self.settings.fragment_log_length, self.company.paced
        messages = [read_stored(raw) for raw in batch] if length or paced else []  # parsed once here
        if length:
            logged = _logged(batch, messages, self.conversation, previous, self._turn_at)
            log_fragments(pipe, self._cid, logged, length)
        if paced and arrivals:
            key, pace = self._pace_of(_subject(messages[0], self.conversation))
            self._pace = (key, pace.observe(arrivals, self._turn_at))
            pipe.set(key, self._pace[1].to_json(), ex=PACE_TTL_SECONDS)
        results = pipe.execute()
        if not append:
            self._handoff, self._state = bool(results[0]), LedgerState(dict(results[1]))

    # -- one batch -----------------------------------------------------------------

    def _process_guarded(self, batch: list[str], attempts: int, last_error: str) -> float | None:
        """Handle a batch; a failure counts against it. Returns None when the batch is
        done (answered or dead-lettered), else the seconds before a fresh run retries."""
        limit = self.settings.batch_max_attempts
        if attempts >= limit:
            error = last_error or f"its worker died while handling it, {attempts} times"
            self._dead_letter(batch, "crash", error, attempts=attempts)
            return None
        try:
            self._process(batch)
            return None
        except (LeaseLost, redis.RedisError):
            raise  # not the batch's fault: the lease or Redis went away
        except Exception as exc:  # a poison batch: counted, retried, then dead-lettered
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.exception(
                "batch failed company=%s conversation=%s attempt=%d/%d",
                self._cid,
                self.conversation,
                attempts + 1,
                limit,
            )
            assert self._ledger is not None
            attempts = self._ledger.note_error(error)  # progress made by this run resets them
            if attempts >= limit:
                left = self.client.lrange(self._key(keys.processing), 0, -1)
                self._dead_letter(left, "crash", error, attempts=attempts)
                return None
            return min(RETRY_CAP_SECONDS, 2.0 ** max(1, attempts))

    def _process(self, batch: list[str]) -> None:
        raw_of: dict[int, str] = {}
        self._budget = None
        messages = self._parse(batch, raw_of)
        if not messages:
            return
        account = messages[0].account_id
        self._typing_shown = False
        typing: Typing | None = None
        try:
            units = self._plan(messages)
            superseded = 0
            while units:
                segment, stored = units.pop(0)
                self._proven()
                raws = [raw_of[m.id] for m in segment.messages]
                if self._handed_off():
                    self._leave_to_humans(raws)
                    continue
                if stored is None:
                    typing = typing or Typing(self.replier, account, self.conversation)
                    answered = self._ask_and_store(segment, superseded, raw_of)
                    if isinstance(answered, list):
                        # The contact kept typing while the bot thought: its answer is stale.
                        superseded += 1
                        rest = [m for s, _ in units for m in s.messages]
                        units = self._plan([*segment.messages, *rest, *answered])
                        continue
                    stored = answered
                    self._typing_shown |= typing.settle()  # an "on" in flight lands before the reply
                    typing = None  # the next segment's bot call gets its own
                self._post_answer(segment, raws, stored)
        finally:
            if typing is not None:
                self._typing_shown |= typing.settle()
            if self._typing_shown:
                self.replier.typing(account, self.conversation, False)

    def _plan(self, messages: list[StoredMessage]) -> list[Unit]:
        """The bot calls for these messages, in order. A message the ledger covers keeps
        the answer stored for it (with the messages that answer covers); the others
        are grouped by the batching rules."""
        units: list[Unit] = []
        fresh: list[StoredMessage] = []
        index = 0
        while index < len(messages):
            answer = self._state.answer_covering(messages[index].id)
            if answer is None:
                fresh.append(messages[index])
                index += 1
                continue
            units += [(s, None) for s in segments(fresh, self.company.batch_max_avg_chars)]
            fresh = []
            covered = [messages[index]]
            index += 1
            while index < len(messages) and self._covered_by(messages[index], answer):
                covered.append(messages[index])
                index += 1
            units.append((Segment(tuple(covered), batched=len(covered) > 1), answer))
        return units + [(s, None) for s in segments(fresh, self.company.batch_max_avg_chars)]

    def _covered_by(self, message: StoredMessage, answer: StoredAnswer) -> bool:
        found = self._state.answer_covering(message.id)
        return found is not None and found.answer_id == answer.answer_id

    def _proven(self) -> None:
        assert self._run is not None
        self._run.check()

    def _handed_off(self) -> bool:
        """Does a human hold the conversation, or is the bot paused by a label (read
        with the claim for the first unit)?"""
        if self._handoff is not None:
            seen, self._handoff = self._handoff, None
            return seen
        return bool(self.client.exists(self._key(keys.handoff), self._key(keys.paused)))

    def _parse(self, raws: list[str], raw_of: dict[int, str]) -> list[StoredMessage]:
        """Stored entries as messages; an unreadable one is dead-lettered with its reason."""
        messages = []
        for raw in raws:
            try:
                message = StoredMessage.from_json(raw)
            except (ValueError, TypeError, KeyError) as exc:
                self._dead_letter([raw], "parse", f"stored message unreadable: {type(exc).__name__}")
                continue
            raw_of[message.id] = raw
            messages.append(message)
        if self.transcribe is not None and any(m.attachments for m in messages):
            assert self._ledger is not None
            if self._budget is None:  # one budget per batch, superseding fragments included
                self._budget = Budget.of(self.company)
            ledger, state = self._ledger, self._state
            messages = with_transcripts(
                messages,
                self.transcribe,
                self._budget,
                state.transcript,
                lambda message, index, value: ledger.keep_transcript(state, message, index, value),
                self._transcription_failed,
            )
        return messages

    def _transcription_failed(self, why: str) -> None:
        """The voice note goes to the bot without its text: never dropped."""
        self.client.hincrby(keys.stats(self._cid), Stat.TRANSCRIPTIONS_FAILED, 1)
        log.warning(
            "voice note not transcribed company=%s conversation=%s: %s", self._cid, self.conversation, why
        )

    # -- asking the bot once -------------------------------------------------------

    def _off_duty(self) -> BotReply | None:
        """BOT_HOURS: outside the bot's hours (by Redis's clock) the batch is left to the
        humans, with AWAY_MESSAGE once per conversation while the business is closed."""
        config = self.company
        if not config.keeps_hours:
            return None
        now = redis_now(self.client)
        if config.bot_on_duty(now):
            return None
        self.client.hincrby(keys.stats(self._cid), Stat.OFF_DUTY_BATCHES, 1)
        log.info(
            "bot off duty (BOT_HOURS=%s) company=%s conversation=%s",
            config.bot_hours,
            self._cid,
            self.conversation,
        )
        if not config.away_message or config.is_business_open(now):
            return BotReply(())
        until = max(60, int(config.seconds_until_hours_change(now)))
        first = self.client.set(self._key(keys.away), "1", nx=True, ex=until)
        return BotReply((config.away_message,) if first else ())

    def _over_budget(self) -> BotReply | None:
        """BOT_CALLS_PER_DAY: take this call from today's budget (by Redis's clock); when
        it is used up, the conversation goes to humans with BUDGET_MESSAGE instead."""
        per_day = self.company.bot_calls_per_day
        if not per_day:
            return None
        day = time.strftime("%Y-%m-%d", time.gmtime(redis_now(self.client)))
        if self.scripts.spend_bot_call(self._cid, day, per_day).run() is not None:
            return None
        self.client.hincrby(keys.stats(self._cid), Stat.BUDGET_HANDOFFS, 1)
        log.warning(
            "BOT_CALLS_PER_DAY=%d used up company=%s conversation=%s: handed to humans",
            per_day,
            self._cid,
            self.conversation,
        )
        message = self.company.budget_message
        return BotReply((message,) if message else (), handoff=True)

    def _keyword_handoff(self, segment: Segment) -> BotReply | None:
        """A contact message that is exactly one of HANDOFF_KEYWORDS hands the conversation
        to humans at once: no bot call; HANDOFF_MESSAGE (if set) is the reply."""
        if not any(self.company.asks_for_a_human(m) for m in segment.messages):
            return None
        log.info("handoff keyword company=%s conversation=%s", self._cid, self.conversation)
        message = self.company.handoff_message
        return BotReply((message,) if message else (), handoff=True)

    def _ask_and_store(
        self, segment: Segment, superseded: int, raw_of: dict[int, str]
    ) -> StoredAnswer | list[StoredMessage]:
        """Ask the bot and store its answer in the ledger (lease-checked) before anything
        is posted (when the bot failed, the fallback in its place). Returns the stored
        answer, or the fragments that arrived meanwhile (the answer is stale and not
        stored)."""
        started = time.perf_counter()
        keyword = self._keyword_handoff(segment) or self._off_duty() or self._over_budget()
        failure = ""
        try:
            reply = keyword or ask_bot(
                self.bot, bot_request(self._cid, segment), self.company.bot_timeout_seconds
            )
        except BotError as exc:
            # The gateway's fallback is stored in the answer's place, like any answer: posted
            # once, marked as the gateway's own, and then the batch goes to the dead letters.
            fallback = self.company.bot_fallback_message
            reply, failure = BotReply((fallback,) if fallback else ()), mask_secrets(str(exc))[:500]
        latency = time.perf_counter() - started
        answer = StoredAnswer(
            segment.key,
            tuple(reply_parts(reply.replies, self.company.reply_split)),
            reply.handoff,
            (reply.team or self.company.handoff_team_id) if reply.handoff else None,
            reply.note if reply.handoff else "",
            failure,
            gateway=keyword is not None,
        )
        counted = RoundTrip(self.client)  # the call's counters go in the store's round trip
        if keyword is None:
            counted.pipe.hincrby(keys.stats(self._cid), Stat.BOT_CALLS, 1)
            if failure:
                counted.pipe.hincrby(keys.stats(self._cid), Stat.BOT_FAILURES, 1)
            else:
                count_into(counted.pipe, self._cid, "gateway_bot_latency_seconds", latency)
        self._proven()
        # A keyword handoff does not give way to newer fragments: the contact asked for a human.
        look = (
            keyword is None
            and not failure
            and superseded < self.company.supersede_max
            and segment.messages[-1].is_text_only
        )
        assert self._ledger is not None
        message_ids = [m.id for m in segment.messages]
        claimed = self._ledger.store_answer(
            answer, message_ids, self.settings.batch_max_messages if look else 0, counted
        )
        if not claimed:
            self._state.store(answer, message_ids)
            return answer
        self._count_claim(claimed, append=True)
        newer = self._parse(claimed, raw_of)
        self.client.hincrby(keys.stats(self._cid), Stat.SUPERSEDED_RUNS, 1)
        log.info(
            "stale reply suppressed company=%s conversation=%s newer=%d",
            self._cid,
            self.conversation,
            len(newer),
        )
        return newer

    # -- posting the stored answer -------------------------------------------------

    def _post_answer(self, segment: Segment, raws: list[str], answer: StoredAnswer) -> None:
        assert self._ledger is not None and self._run is not None
        account = segment.messages[0].account_id
        poster = Poster(
            self.client,
            self.company,
            self.conversation,
            self.replier,
            self._ledger,
            self._state,
            self._run.check,
        )
        failed = poster.post(account, answer, after_id=max(m.id for m in segment.messages))
        self._typing_shown |= poster.typing_shown
        if answer.failure:  # the bot failed: its fallback (if any) is out, the batch is a dead letter
            if failed is not None:
                log.error(
                    "fallback not sent company=%s conversation=%s error=%s",
                    self._cid,
                    self.conversation,
                    failed[1],
                )
            elif answer.parts:
                self.client.hincrby(keys.stats(self._cid), Stat.FALLBACKS_SENT, 1)
            self._dead_letter(raws, "bot", answer.failure)
            return
        if failed is not None:
            index, exc = failed
            self.client.hincrby(keys.stats(self._cid), Stat.REPLIES_FAILED, 1)
            self._dead_letter(raws, "chatwoot", str(exc), ambiguous=exc.ambiguous, parts_posted=index)
            return
        if answer.by_bot and isinstance(self.bot, KeepsTurns):
            self.bot.remember(self.conversation, answer.answer_id, segment.text, "\n\n".join(answer.parts))
        if answer.handoff:
            self._hand_off(account, answer)
        self._complete(raws)
        log.info(
            "batch answered company=%s conversation=%s task=%s run=%s messages=%d parts=%d batched=%s",
            self._cid,
            self.conversation,
            self.task_id,
            self.run_id,
            len(raws),
            len(answer.parts),
            segment.batched,
        )

    # -- endings -------------------------------------------------------------------

    def _complete(self, raws: list[str], dead_letter: dict | None = None) -> None:
        letter = json.dumps(dead_letter, ensure_ascii=False) if dead_letter else ""
        dropped = self.scripts.complete(
            self._cid, self.conversation, self.run_id, raws, letter, self.settings.dead_letter_max
        ).run()
        if dropped:
            log.error(
                "dead-letter list full company=%s: dropped the %d oldest entries (DEAD_LETTER_MAX=%d)",
                self._cid,
                dropped,
                self.settings.dead_letter_max,
            )

    def _dead_letter(self, raws: list[str], stage: str, error: str, **extra: object) -> None:
        log.error(
            "dead letter company=%s conversation=%s stage=%s messages=%d error=%s",
            self._cid,
            self.conversation,
            stage,
            len(raws),
            error,
        )
        letter = {
            "company": self._cid,
            "conversation_id": self.conversation,
            "stage": stage,
            "error": mask_secrets(error),
            "messages": raws,
            "failed_at": self.clock(),
            "task_id": self.task_id,
            "run_id": self.run_id,
            **extra,
        }
        self._complete(raws, letter)

    def _leave_to_humans(self, raws: list[str]) -> None:
        """A human holds the conversation: the messages are theirs (Chatwoot shows them)."""
        self._complete(raws)
        log.info(
            "messages left to humans company=%s conversation=%s messages=%d",
            self._cid,
            self.conversation,
            len(raws),
        )

    def _hand_off(self, account: int, answer: StoredAnswer) -> None:
        """Humans take over: the marker (lease-checked), then in Chatwoot the bot's note
        for them, the team, and the status ``open``; each best effort, logged."""
        self.scripts.mark_handoff(
            self._cid, self.conversation, self.run_id, self.company.handoff_ttl_seconds
        ).run()
        steps: list[tuple[str, Callable[[], None]]] = []
        if answer.note:
            steps.append(("note", lambda: self.replier.add_note(account, self.conversation, answer.note)))
        if answer.team is not None:
            team = answer.team
            steps.append(("team", lambda: self.replier.assign_team(account, self.conversation, team)))
        steps.append(("handoff", lambda: self._open(account)))
        for what, step in steps:
            try:
                step()
            except ChatwootError as exc:
                log.error(
                    "%s not sent company=%s conversation=%s error=%s", what, self._cid, self.conversation, exc
                )
        log.info("conversation handed to humans company=%s conversation=%s", self._cid, self.conversation)

    def _open(self, account: int) -> None:
        """``toggle_status`` open, and the status recorded as seen: the gateway's own change
        counts like one from Chatwoot, whose ``conversation_opened`` may never arrive
        (then a later ``pending`` is still told apart as a change)."""
        self.replier.open_conversation(account, self.conversation)
        self.scripts.observe(self.company, self.conversation, Seen(BOT_OPENS, status_changed=True)).run()
