"""Draining one conversation: the body of the ``gateway.drain`` task.

One run of ``Drainer.run`` (a task holding the lease):
1. resumes a leftover ``webhook_processing`` batch first (a drainer died);
2. otherwise waits for the batch to close — not by sleeping: it hands the
   lease to a fresh task id and publishes that task with the remaining time
   as countdown, so a solo worker serves other conversations meanwhile;
3. claims the batch atomically into ``webhook_processing``, calls the bot per
   segment, posts the replies, and only then lets the messages leave
   ``webhook_processing`` (or dead-letters them past their retries);
4. releases the lease in the same script that checks the queue is empty.
Every state change is a Lua script that checks the lease first, so a task
that lost its lease changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import redis
from redis.commands.core import Script

from app import keys
from app.analytics import count_gaps, prior_window
from app.batching import Segment, close_at, segments
from app.bots import Bot, BotReply, bot_request
from app.chatwoot import Replier
from app.errors import BotError, ChatwootError, LeaseLost
from app.lease import new_task_id
from app.metrics import count_into
from app.pace import PACE_TTL_SECONDS, Pace, learned_window
from app.payload import StoredMessage, received_at
from app.replies import split_reply, typing_pause
from app.scripts import Batch, Scripts
from app.sessions import content_digest
from app.settings import CompanyConfig, Settings

__all__ = ["MAX_BATCHES_PER_RUN", "Drainer", "LeaseKeeper", "lease_keeper"]

log = logging.getLogger(__name__)
MAX_BATCHES_PER_RUN = 20
AMBIGUOUS_SETTLE_SECONDS = 2.0
OWN_PENDING_TTL_SECONDS = 300
OWN_REPLY_TTL_SECONDS = 24 * 3600
TYPING_DELAY_SECONDS = 0.5


def _arrivals(batch: list[str]) -> list[float]:
    # an unreadable entry is dead-lettered later; it has no arrival to count
    return [t for t in map(received_at, batch) if t is not None]


def _float_or_none(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _pace_subject(raw: str, conversation: str) -> str:
    """Whose pace a stored message tells: its contact's, else its conversation's."""
    try:
        contact = StoredMessage.from_json(raw).contact.get("id")
    except (ValueError, TypeError, KeyError, AttributeError):
        contact = None
    return f"contact-{contact}" if contact is not None else f"conversation-{conversation}"


class LeaseKeeper:
    """Renews the leases of every drain running in this process (the heartbeat).

    One thread per process, started on first use (and again in a forked
    child), renews all registered leases every quarter TTL in one round trip.
    A lease found taken by another task sets that drain's ``lost`` event; the
    renewal only extends a lease its task still holds, so a finished or
    handed-over lease is never brought back.
    """

    def __init__(self, client: redis.Redis, scripts: Scripts, ttl: float) -> None:
        self._client, self._scripts = client, scripts
        self._ttl_ms, self._interval = int(ttl * 1000), ttl / 4
        self._leases: dict[str, tuple[str, threading.Event]] = {}  # task id -> (lease key, lost)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def keep(self, lease: str, task_id: str) -> threading.Event:
        """Renew ``lease`` for ``task_id`` until ``drop``; the event is set if it is lost."""
        lost = threading.Event()
        with self._lock:
            self._leases[task_id] = (lease, lost)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, daemon=True, name="lease-keeper")
                self._thread.start()
        return lost

    def drop(self, task_id: str) -> None:
        with self._lock:
            self._leases.pop(task_id, None)

    def renew(self) -> None:
        """One pass over the registered leases."""
        with self._lock:
            held = list(self._leases.items())
        if not held:
            return
        batch = Batch(self._client)
        for task_id, (lease, _) in held:
            batch.script(self._scripts.hold, [lease], [task_id, self._ttl_ms, "0"])
        try:
            results = batch.execute()
        except redis.RedisError as exc:
            log.warning("lease renewal failed leases=%d error=%s", len(held), type(exc).__name__)
            return
        for (task_id, (_, lost)), kept in zip(held, results, strict=True):
            if not kept:
                lost.set()
                self.drop(task_id)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self.renew()
            except Exception:  # the heartbeat of every drain in the process: never let it die
                log.exception("lease renewal pass failed")


_keepers: dict[tuple[int, float], LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def lease_keeper(client: redis.Redis, scripts: Scripts, ttl: float) -> LeaseKeeper:
    """The process's keeper for this Redis client and lease TTL."""
    with _keepers_lock:
        key = (id(client), ttl)
        if key not in _keepers:
            _keepers[key] = LeaseKeeper(client, scripts, ttl)
        return _keepers[key]


_typing: tuple[int, ThreadPoolExecutor] | None = None


def _typing_pool() -> ThreadPoolExecutor:
    """Threads that switch the typing indicator on while the bot thinks (per process)."""
    global _typing
    if _typing is None or _typing[0] != os.getpid():
        _typing = (os.getpid(), ThreadPoolExecutor(max_workers=64, thread_name_prefix="typing"))
    return _typing[1]


class _Typing:
    """'Typing…' while the bot thinks, shown only once it has thought for
    ``TYPING_DELAY_SECONDS``: a fast bot's answer needs no indicator (and no
    two Chatwoot calls) that would flash for a few milliseconds."""

    def __init__(self, replier: Replier, account: int, conversation: str) -> None:
        self._args = (replier, account, conversation)
        self._answered = threading.Event()
        self._shown = False
        self._future = _typing_pool().submit(self._after_delay)

    def _after_delay(self) -> None:
        if not self._answered.wait(TYPING_DELAY_SECONDS):
            self._shown = True
            replier, account, conversation = self._args
            replier.typing(account, conversation, True)

    def settle(self) -> bool:
        """The bot is done: no indicator from now on; wait for one in flight. Was it shown?"""
        self._answered.set()
        wait([self._future], timeout=3)
        return self._shown


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
    schedule: Callable[[str, float], None]  # (task id, countdown) -> publish drain task
    clock: Callable[[], float] = time.time
    _lost: threading.Event | None = field(default=None, init=False)  # set when the lease is lost
    _previous: float | None = field(default=None, init=False)  # latest arrival counted for gaps
    _pace: tuple[str, Pace] | None = field(default=None, init=False)  # (key, pace) in learned mode
    _handoff: bool | None = field(default=None, init=False)  # read with the claim, for its first segment
    _sent: dict[str, str] = field(default_factory=dict, init=False)  # reply parts posted (webhook_sent)
    _typing_shown: bool = field(default=False, init=False)  # "typing" went on during this batch

    @property
    def _cid(self) -> str:
        return self.company.company_id

    def _key(self, fn: Callable[[str, str], str]) -> str:
        return fn(self._cid, self.conversation)

    def run(self) -> str:
        """Drain what is due; return what happened (for logs and tests)."""
        lease = self._key(keys.active_task)
        ttl_ms = int(self.settings.lease_ttl_seconds * 1000)
        hold = (self.scripts.hold, [lease], [self.task_id, ttl_ms, "1"])
        held, wait = self._seconds_until_due(hold)  # one round trip: take the lease, look at the queue
        if not held:
            return "not-holder"
        keeper = lease_keeper(self.client, self.scripts, self.settings.lease_ttl_seconds)
        self._lost = keeper.keep(lease, self.task_id)
        try:
            return self._drain(wait)
        except LeaseLost:
            log.warning(
                "lease lost company=%s conversation=%s task=%s", self._cid, self.conversation, self.task_id
            )
            return "lease-lost"
        finally:
            keeper.drop(self.task_id)

    def _drain(self, wait: float | None) -> str:
        for _ in range(MAX_BATCHES_PER_RUN):
            if wait is None:
                if self._release_if_empty():
                    return "released"
            elif wait > 0:
                return self._rearm(wait)
            else:
                batch = self._claim()
                if batch:
                    self._process(batch)
                    if self._release_if_empty():  # the common end: one round trip
                        return "released"
            wait = self._seconds_until_due()[1]
        return self._rearm(0)

    def _seconds_until_due(self, hold: tuple | None = None) -> tuple[bool, float | None]:
        """(lease held, wait): wait is None when nothing waits, 0 when a batch is due
        (or left over), else the seconds until it is. ``hold`` (script, keys, args)
        takes the lease in the same round trip."""
        learned = self.company.batch_window_mode == "learned"
        batch = Batch(self.client)
        if hold:
            batch.script(*hold)
        pipe = batch.pipe
        pipe.llen(self._key(keys.processing))
        pipe.lindex(self._key(keys.queue), 0)
        pipe.lindex(self._key(keys.queue), -1)
        pipe.hget(keys.last_fragment(self._cid), self.conversation)
        if learned:
            pipe.lrange(self._key(keys.queue), 0, self.settings.batch_max_messages - 1)
        results = batch.execute()
        held = bool(results.pop(0)) if hold else True
        leftover, first, last, previous, *queued = results
        self._previous = _float_or_none(previous)
        if leftover:
            return held, 0.0
        if first is None:
            return held, None
        first_at, last_at = received_at(first), received_at(last)
        if first_at is None or last_at is None:
            return held, 0.0  # unreadable entry: claim it now so it is dead-lettered
        config = self.company
        if config.batch_window_mode == "fixed":
            due = first_at + config.batch_window_seconds
        else:
            window = config.batch_window_seconds
            if learned:
                window = self._learned_window(first, [*_arrivals(queued[0]), last_at])
            due = close_at(first_at, last_at, window, config.batch_max_wait_seconds)
        return held, max(0.0, due - self.clock())

    def _learned_window(self, first: str, queued: list[float]) -> float:
        """This contact's quiet period (``app.pace``), from what is known of how they type."""
        config = self.company
        _, pace = self._pace_of(first)
        prior = prior_window(self.client, self._cid, config.batch_window_seconds)
        return learned_window(
            pace, queued, prior, config.batch_window_min_seconds, config.batch_window_max_seconds
        )

    def _pace_of(self, raw: str) -> tuple[str, Pace]:
        """The key and pace of the contact who sent ``raw`` (read once per contact and run)."""
        key = keys.pace(self._cid, _pace_subject(raw, self.conversation))
        if self._pace is None or self._pace[0] != key:
            self._pace = (key, Pace.from_json(self.client.get(key)))
        return self._pace

    def _release_if_empty(self) -> bool:
        result = self.scripts.release_if_empty(
            keys=[
                self._key(keys.active_task),
                self._key(keys.queue),
                self._key(keys.processing),
                keys.conversation_index(self._cid),
            ],
            args=[self.task_id, self.conversation],
            client=self.client,
        )
        if result == -1:
            raise LeaseLost()
        return result == 1

    def _rearm(self, countdown: float) -> str:
        """Hand the lease to a fresh task due in ``countdown`` seconds."""
        fresh = new_task_id()
        ttl_ms = int((countdown + self.settings.lease_ttl_seconds) * 1000)
        lease = self._key(keys.active_task)
        if not self.scripts.hand_over(keys=[lease], args=[self.task_id, fresh, ttl_ms], client=self.client):
            raise LeaseLost()
        self.schedule(fresh, countdown)
        return "rearmed"

    def _claim_call(self, append: bool) -> tuple[Script, list[str], list[object]]:
        """CLAIM_BATCH: move queued messages into processing (``append``: beside the batch in flight)."""
        return (
            self.scripts.claim_batch,
            [self._key(keys.queue), self._key(keys.processing), self._key(keys.active_task)],
            [self.task_id, self.settings.batch_max_messages, "1" if append else "0"],
        )

    def _claim(self) -> list[str]:
        script, claim_keys, args = self._claim_call(append=False)
        batch = script(keys=claim_keys, args=args, client=self.client)
        if batch is None:
            raise LeaseLost()
        if batch:
            self._count_claim(list(batch), append=False)
        return list(batch)

    def _count_claim(self, batch: list[str], append: bool) -> None:
        """Batch size, fragment gaps and the contact's pace, with (for a new batch) what
        processing it needs to know — is a human on it, which reply parts went out
        already — in one round trip."""
        arrivals = _arrivals(batch)
        pipe = self.client.pipeline(transaction=False)
        if not append:
            pipe.exists(self._key(keys.handoff))
            pipe.hgetall(self._key(keys.sent_parts))
            pipe.hincrby(keys.stats(self._cid), "batches", 1)
            count_into(pipe, self._cid, "gateway_batch_size_messages", len(batch))
        self._previous = count_gaps(pipe, self._cid, self.conversation, self._previous, arrivals)
        if self.company.batch_window_mode == "learned" and arrivals:
            key, pace = self._pace_of(batch[0])
            self._pace = (key, pace.observe(arrivals))
            pipe.set(key, self._pace[1].to_json(), ex=PACE_TTL_SECONDS)
        results = pipe.execute()
        if not append:
            self._handoff, self._sent = bool(results[0]), dict(results[1])

    def _check_lease(self) -> None:
        if self._lost is not None and self._lost.is_set():
            raise LeaseLost()

    def _complete(self, raws: list[str], dead_letter: dict | None = None) -> None:
        letter = json.dumps(dead_letter, ensure_ascii=False) if dead_letter else ""
        left = self.scripts.complete(
            keys=[
                self._key(keys.processing),
                self._key(keys.active_task),
                self._key(keys.sent_parts),
                keys.dead_letters(self._cid),
                keys.stats(self._cid),
            ],
            args=[self.task_id, letter, *raws],
            client=self.client,
        )
        if left is None:
            raise LeaseLost()

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
            "error": error,
            "messages": raws,
            "failed_at": self.clock(),
            "task_id": self.task_id,
            **extra,
        }
        self._complete(raws, letter)

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
        return messages

    def _process(self, batch: list[str]) -> None:
        raw_of: dict[int, str] = {}
        messages = self._parse(batch, raw_of)
        if not messages:
            return
        account = messages[0].account_id
        self._typing_shown = False
        typing: _Typing | None = None
        try:
            pending = segments(messages, self.company.batch_max_avg_chars)
            superseded = 0
            while pending:
                segment = pending.pop(0)
                self._check_lease()
                raws = [raw_of[m.id] for m in segment.messages]
                if self._handed_off():
                    self._leave_to_humans(raws)
                    continue
                typing = typing or _Typing(self.replier, account, self.conversation)
                asked = self._ask_bot(segment, raws)
                if asked is None:
                    continue
                reply, latency = asked
                newer = self._after_bot(segment, superseded, raw_of, latency)
                if newer:
                    # The contact kept typing while the bot thought: its answer is stale.
                    superseded += 1
                    merged = [*segment.messages, *(m for s in pending for m in s.messages), *newer]
                    pending = segments(merged, self.company.batch_max_avg_chars)
                    continue
                self._typing_shown |= typing.settle()  # an "on" in flight lands before the reply
                typing = None  # the next segment's bot call gets its own
                self._answer(segment, raws, reply)
        finally:
            if typing is not None:
                self._typing_shown |= typing.settle()
            if self._typing_shown:
                self.replier.typing(account, self.conversation, False)

    def _handed_off(self) -> bool:
        """Does a human hold the conversation (read with the claim for the first segment)?"""
        if self._handoff is not None:
            seen, self._handoff = self._handoff, None
            return seen
        return bool(self.client.exists(self._key(keys.handoff)))

    def _ask_bot(self, segment: Segment, raws: list[str]) -> tuple[BotReply, float] | None:
        """The bot's reply and how long it took; None when it failed (dead-lettered)."""
        started = time.perf_counter()
        try:
            reply = self.bot.answer(bot_request(self._cid, segment))
        except BotError as exc:
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(keys.stats(self._cid), "bot_calls", 1)
            pipe.hincrby(keys.stats(self._cid), "bot_failures", 1)
            pipe.execute()
            self._send_fallback(segment)
            self._dead_letter(raws, "bot", str(exc))
            return None
        latency = time.perf_counter() - started
        self._check_lease()
        return reply, latency

    def _after_bot(
        self, segment: Segment, superseded: int, raw_of: dict[int, str], latency: float
    ) -> list[StoredMessage]:
        """Count the call and, in the same round trip, move into this batch the text
        fragments that arrived while the bot thought (returned; [] when none)."""
        batch = Batch(self.client)
        batch.pipe.hincrby(keys.stats(self._cid), "bot_calls", 1)
        count_into(batch.pipe, self._cid, "gateway_bot_latency_seconds", latency)
        look = superseded < self.company.supersede_max and segment.messages[-1].is_text_only
        if look:
            batch.script(*self._claim_call(append=True))
        claimed = batch.execute()[-1] if look else []
        if claimed is None:
            raise LeaseLost()
        if not claimed:
            return []
        self._count_claim(list(claimed), append=True)
        newer = self._parse(list(claimed), raw_of)
        if newer:
            self.client.hincrby(keys.stats(self._cid), "superseded_runs", 1)
            log.info(
                "stale reply suppressed company=%s conversation=%s newer=%d",
                self._cid,
                self.conversation,
                len(newer),
            )
        return newer

    def _answer(self, segment: Segment, raws: list[str], reply: BotReply) -> None:
        stats = keys.stats(self._cid)
        account = segment.messages[0].account_id
        sent = self._sent
        parts = [p for r in reply.replies for p in split_reply(r, self.company.reply_split)]
        for index, part in enumerate(parts):
            marker = f"{segment.key}:{index}"
            if index and marker not in sent and self.company.reply_split == "paragraphs":
                self._pause_typing(account, part)
            try:
                self._post_part(account, marker, part, sent.get(marker))
            except ChatwootError as exc:
                self.client.hincrby(stats, "replies_failed", 1)
                self._dead_letter(raws, "chatwoot", str(exc), ambiguous=exc.ambiguous, parts_posted=index)
                return
        if reply.handoff:
            self._hand_off(account)
        self._complete(raws)
        log.info(
            "batch answered company=%s conversation=%s task=%s messages=%d parts=%d batched=%s",
            self._cid,
            self.conversation,
            self.task_id,
            len(raws),
            len(parts),
            segment.batched,
        )

    def _pause_typing(self, account: int, part: str) -> None:
        """Show 'typing' for a time proportional to the part, like a person would."""
        self._typing_shown = True
        self.replier.typing(account, self.conversation, True)
        time.sleep(typing_pause(part, self.company.typing_chars_per_second))

    def _post_part(self, account: int, marker: str, part: str, state: str | None) -> None:
        """Post one reply part once.

        ``webhook_sent`` holds ``pending:<time>`` from just before the POST and
        ``sent`` after it. A part found pending was being posted when a drainer
        died: if the token can read the conversation, it is looked up instead
        of posted again. The same read-back settles an ambiguous timeout.
        """
        sent_key = self._key(keys.sent_parts)
        if state == "sent":
            return  # posted by a drainer that died before completing the batch
        if state and state.startswith("pending:") and self._already_posted(account, part, state):
            self.client.hset(sent_key, marker, "sent")
            return
        started = self.clock()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(sent_key, marker, f"pending:{started}")
        # Its webhook may come back (with a user token, as a "user" message) before
        # the POST answers: recognise it by content, so it is not an agent takeover.
        pipe.sadd(self._key(keys.own_pending), content_digest(part))
        pipe.expire(self._key(keys.own_pending), OWN_PENDING_TTL_SECONDS)
        pipe.execute()
        message_id = None
        try:
            message_id = self.replier.create_message(account, self.conversation, part)
        except ChatwootError as exc:
            if not exc.ambiguous:
                raise
            time.sleep(AMBIGUOUS_SETTLE_SECONDS)  # let a slow create finish before looking
            found = self.replier.find_reply(account, self.conversation, part, started)
            if found is None:
                raise  # cannot tell: dead-letter as ambiguous rather than risk a second message
            if not found:
                message_id = self.replier.create_message(account, self.conversation, part)
            log.warning(
                "ambiguous reply settled by read-back conversation=%s posted_again=%s",
                self.conversation,
                not found,
            )
        pipe = self.client.pipeline(transaction=False)
        if message_id is not None:  # its webhook will come back: it is ours, not an agent's
            pipe.set(keys.own_reply(self._cid, message_id), "1", ex=OWN_REPLY_TTL_SECONDS)
        pipe.hset(sent_key, marker, "sent")
        pipe.hincrby(keys.stats(self._cid), "replies_sent", 1)
        pipe.execute()
        self._sent[marker] = "sent"

    def _already_posted(self, account: int, part: str, state: str) -> bool:
        try:
            since = float(state.split(":", 1)[1])
        except ValueError:
            return False
        found = self.replier.find_reply(account, self.conversation, part, since)
        if found:
            self.client.hincrby(keys.stats(self._cid), "replies_recovered", 1)
            log.warning("reply found already posted conversation=%s: not posting it again", self.conversation)
        return bool(found)

    def _send_fallback(self, segment: Segment) -> None:
        """Tell the contact something went wrong (BOT_FALLBACK_MESSAGE), best effort."""
        fallback = self.company.bot_fallback_message
        if not fallback:
            return
        try:
            self.replier.create_message(segment.messages[0].account_id, self.conversation, fallback)
        except ChatwootError as exc:
            log.error(
                "fallback not sent company=%s conversation=%s error=%s", self._cid, self.conversation, exc
            )
            return
        self.client.hincrby(keys.stats(self._cid), "fallbacks_sent", 1)

    def _leave_to_humans(self, raws: list[str]) -> None:
        """A human holds the conversation: the messages are theirs (Chatwoot shows them)."""
        self._complete(raws)
        log.info(
            "messages left to humans company=%s conversation=%s messages=%d",
            self._cid,
            self.conversation,
            len(raws),
        )

    def _hand_off(self, account: int) -> None:
        self.client.set(self._key(keys.handoff), "bot", ex=self.company.resume_after_seconds or None)
        self.client.hincrby(keys.stats(self._cid), "handoffs", 1)
        try:
            self.replier.open_conversation(account, self.conversation)
        except ChatwootError as exc:
            log.error(
                "handoff not sent company=%s conversation=%s error=%s", self._cid, self.conversation, exc
            )
        log.info("conversation handed to humans company=%s conversation=%s", self._cid, self.conversation)
