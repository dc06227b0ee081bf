"""Each Lua script on fakeredis (with lupa): the invariants of DESIGN.md §6."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from types import SimpleNamespace

import fakeredis
import pytest
import redis
import redis.connection

from app.conversation.ownership import Event, Holder, Seen
from app.drain.ledger import ATTEMPTS, ERROR
from app.errors import LeaseLost
from app.store import keys
from app.store.scripts import (
    ClaimedBatch,
    Dispatch,
    DueClaim,
    Enqueued,
    EnqueueResult,
    Rescue,
    RoundTrip,
    Scripts,
    Sender,
)

C, CONV = "acme", "42"


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def s(r: fakeredis.FakeRedis) -> Scripts:
    return Scripts(r)


def company(mode: str = "sliding", drafts: bool = False) -> SimpleNamespace:
    """What ENQUEUE reads of a company: window 10 s, max wait 30 s, at most 3 queued."""
    return SimpleNamespace(
        company_id=C,
        max_queue_per_conversation=3,
        first_window=10,
        batch_max_wait_seconds=30,
        status_ttl_seconds=600,
        batch_window_mode=mode,
        handoff_ttl_seconds=600,
        bot_owns_pending=True,
        max_conversations_waiting=1000,
        drafts=drafts,
        checks_window=lambda channel: channel == "Channel::Whatsapp",
    )


SETTINGS = SimpleNamespace(queue_ttl_seconds=3600, seen_ttl_seconds=60)


@dataclass(frozen=True)
class Message:
    """What ENQUEUE reads of a stored message."""

    name: str
    id: int
    conversation_status: str = ""
    conversation_id: str = CONV
    account_id: int = 1
    assignee: str = ""
    channel: str | None = None

    def open_json(self) -> str:
        return open_json(self.name)

    @property
    def seen(self) -> Seen:
        return Seen(self.conversation_status, False, self.assignee)


def enqueue(
    s: Scripts,
    r,
    payload: str,
    task: str,
    msg_id: int,
    delivery: str = "",
    status: str = "",
    mode: str = "sliding",
) -> EnqueueResult:  # type: ignore[no-untyped-def]
    message = Message(payload, msg_id, status)
    return s.intake.enqueue(SETTINGS, company(mode), message, delivery or None).run()  # type: ignore[arg-type]


def open_json(name: str) -> str:
    """A stored message as the webhook hands it to ENQUEUE: open, waiting for its arrival time."""
    return json.dumps({"name": name})[:-1] + ',"received_at":'


def names(r, key: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [json.loads(raw)["name"] for raw in r.lrange(key, 0, -1)]


def test_a_drafting_bot_queues_the_message_of_a_conversation_a_human_holds(s: Scripts, r) -> None:
    r.set(keys.handoff(C, CONV), "agent")
    assert enqueue(s, r, "m1", "", 1).status is Enqueued.HANDOFF
    message = Message("m2", 2)
    drafted = s.intake.enqueue(SETTINGS, company(drafts=True), message, None).run()  # type: ignore[arg-type]
    assert drafted.status is Enqueued.QUEUED and names(r, keys.queue(C, CONV)) == ["m2"]
    assert r.get(keys.handoff(C, CONV)) == "agent"  # the holder is still tracked


def test_enqueue_pushes_sets_ttl_and_schedules_the_batch(s: Scripts, r) -> None:
    before = time.time()
    assert enqueue(s, r, "m1", "", 1) == EnqueueResult(Enqueued.QUEUED, 1, "", 10.0)  # due in the window
    assert names(r, keys.queue(C, CONV)) == ["m1"]
    # the arrival time is Redis's clock, written by the script (the web's clock plays no part)
    arrived = json.loads(r.lindex(keys.queue(C, CONV), 0))["received_at"]
    assert before - 1 <= arrived <= time.time() + 1
    assert abs(r.zscore(keys.due(C), CONV) - (arrived + 10)) < 0.01
    assert 3500 < r.ttl(keys.queue(C, CONV)) <= 3600
    assert not r.exists(keys.lease(C, CONV))  # nothing leased: the dispatcher does that
    assert r.sismember(keys.conversation_index(C), CONV)


def test_enqueue_slides_the_due_time_within_the_max_wait_and_reports_the_holder(s: Scripts, r) -> None:
    enqueue(s, r, "m1", "", 1)
    first = json.loads(r.lindex(keys.queue(C, CONV), 0))["received_at"]
    r.lset(keys.queue(C, CONV), 0, r.lindex(keys.queue(C, CONV), 0).replace(str(first), str(first - 25)))
    r.set(keys.lease(C, CONV), "task-a#1", px=5000)
    result = enqueue(s, r, "m2", "", 2)
    assert (result.status, result.length, result.holder) == ("queued", 2, "task-a#1")
    assert 4.9 < result.due_in_seconds <= 5.0  # the first fragment came 25 s ago: the 30 s max wait caps it
    r.delete(keys.queue(C, CONV), keys.due(C))
    enqueue(s, r, "m3", "", 3, mode="fixed")
    first = json.loads(r.lindex(keys.queue(C, CONV), 0))["received_at"]
    r.lset(keys.queue(C, CONV), 0, r.lindex(keys.queue(C, CONV), 0).replace(str(first), str(first - 4)))
    assert 5.9 < enqueue(s, r, "m4", "", 4, mode="fixed").due_in_seconds <= 6  # fixed: from the first


def test_enqueue_deduplicates_messages_and_deliveries(s: Scripts, r) -> None:
    enqueue(s, r, "m1", "t", 1, delivery="d1")
    assert enqueue(s, r, "m1", "t", 1, delivery="d9").status == "duplicate"
    assert enqueue(s, r, "m2", "t", 2, delivery="d1").status == "duplicate"
    assert r.llen(keys.queue(C, CONV)) == 1
    assert r.hget(keys.stats(C), "webhooks_duplicate") == "2"


def test_enqueue_refuses_beyond_the_queue_limit(s: Scripts, r) -> None:
    for i in range(3):
        enqueue(s, r, f"m{i}", "t", i)
    assert enqueue(s, r, "m3", "t", 3).status is Enqueued.FULL
    assert r.llen(keys.queue(C, CONV)) == 3
    assert not r.exists(keys.seen_message(C, 3))  # a refused message may come again


def test_enqueue_refuses_a_new_conversation_past_the_companys_ceiling(s: Scripts, r) -> None:
    """Review 2026-12-03, finding 4: one company's credential filled the shared Redis with
    1 MiB messages across unlimited conversations. MAX_CONVERSATIONS_WAITING bounds the
    conversations holding messages; those already holding some still take theirs; one
    moved in from the spool (answered 202 already) is never refused."""
    ceiling = SimpleNamespace(**{**vars(company()), "max_conversations_waiting": 2})
    for conv in ("1", "2"):
        assert (
            s.intake.enqueue(SETTINGS, ceiling, Message("a", int(conv), conversation_id=conv), None)
            .run()
            .status
            == "queued"
        )
    third = s.intake.enqueue(SETTINGS, ceiling, Message("b", 3, conversation_id="3"), None).run()
    assert (third.status, third.length) == (Enqueued.BUSY, 2)
    assert not r.exists(keys.queue(C, "3")) and not r.exists(keys.seen_message(C, 3))  # may come again
    assert r.hget(keys.stats(C), "webhooks_rejected_busy") == "1"
    assert (
        s.intake.enqueue(SETTINGS, ceiling, Message("c", 4, conversation_id="1"), None).run().status
        == "queued"
    )
    spooled = s.intake.enqueue(
        SETTINGS, ceiling, Message("d", 5, conversation_id="3"), None, ordered=True
    ).run()
    assert spooled.status == "queued"
    r.srem(keys.conversation_index(C), "1")  # conversation 1 drained and released
    assert (
        s.intake.enqueue(SETTINGS, ceiling, Message("e", 6, conversation_id="7"), None).run().status == "busy"
    )
    r.srem(keys.conversation_index(C), "3")
    assert (
        s.intake.enqueue(SETTINGS, ceiling, Message("e", 6, conversation_id="7"), None).run().status
        == "queued"
    )


def test_enqueue_ignores_a_handed_off_conversation_until_its_status_changes_to_pending(s: Scripts, r) -> None:
    """An agent's reply leaves an Agent Bot conversation pending: "pending" repeated on the
    contact's messages is no sign the bot may speak; a change to pending is."""
    r.set(keys.handoff(C, CONV), "agent")
    assert enqueue(s, r, "m1", "t", 1, status="pending").status == "handoff"  # nothing seen before: no change
    assert enqueue(s, r, "m2", "t", 2, status="pending").status == "handoff"  # pending again: no change
    assert enqueue(s, r, "m3", "t", 3, status="open").status == "handoff"
    assert r.get(keys.status(C, CONV)) == "open" and 0 < r.ttl(keys.status(C, CONV)) <= 600
    assert (
        enqueue(s, r, "m4", "t", 4, status="pending").status == "queued"
    )  # open -> pending: the bot's again
    assert not r.exists(keys.handoff(C, CONV))


def test_a_status_event_ends_a_takeover_only_on_a_change_to_pending_or_resolved(s: Scripts, r) -> None:
    def event(status: str, explicit: str) -> bool:
        before, after = s.ownership.observe(company(), CONV, Seen(status, explicit == "1")).run()  # type: ignore[arg-type]
        return before is not Holder.BOT and after is Holder.BOT

    r.set(keys.handoff(C, CONV), "agent")
    assert event("pending", "0") is False  # conversation_updated, nothing seen before
    assert event("pending", "0") is False  # conversation_updated, pending again
    assert event("snoozed", "1") is False
    assert r.exists(keys.handoff(C, CONV))
    assert event("pending", "1") is True  # conversation_status_changed to pending
    assert not r.exists(keys.handoff(C, CONV)) and r.hget(keys.stats(C), "takeovers_ended") == "1"
    r.set(keys.handoff(C, CONV), "agent")
    assert event("resolved", "0") is True  # a different status than the last seen: resolved


def claim(s: Scripts, r, run: str, most: int) -> ClaimedBatch:  # type: ignore[no-untyped-def]
    return s.batch.claim_batch(C, CONV, run, most).run()


def test_claim_requires_the_lease_resumes_leftovers_first_and_counts_attempts(s: Scripts, r) -> None:
    r.rpush(keys.queue(C, CONV), "a", "b", "c")
    with pytest.raises(LeaseLost):
        claim(s, r, "intruder", 10)
    r.set(keys.lease(C, CONV), "me")
    assert claim(s, r, "me", 2) == ClaimedBatch(0, "", ["a", "b"])  # first attempt at this batch
    assert r.lrange(keys.queue(C, CONV), 0, -1) == ["c"]
    # A leftover batch (its drainer died) comes back before anything new, one attempt more,
    # with the last error a failing run kept.
    r.hset(keys.ledger(C, CONV), ERROR, "RuntimeError: boom")
    assert claim(s, r, "me", 2) == ClaimedBatch(1, "RuntimeError: boom", ["a", "b"])
    r.delete(keys.processing(C, CONV))
    r.delete(keys.queue(C, CONV))
    assert claim(s, r, "me", 2) == ClaimedBatch(0, "", [])  # nothing to do


def complete(s: Scripts, r, run: str, letter: str, *raws: str, most: int = 100) -> int:  # type: ignore[no-untyped-def]
    """The number of old dead letters dropped."""
    return s.batch.complete(C, CONV, run, list(raws), letter, most).run()


def test_complete_removes_only_with_the_lease_and_records_dead_letters(s: Scripts, r) -> None:
    r.rpush(keys.processing(C, CONV), "a", "b")
    r.hset(
        keys.ledger(C, CONV),
        mapping={"part:1-1:0": "sent:9", ATTEMPTS: "2", ERROR: "x", "run:r1": "1", "run:me": "1"},
    )
    r.set(keys.lease(C, CONV), "me")
    with pytest.raises(LeaseLost):
        complete(s, r, "other", "", "a")
    assert complete(s, r, "me", "", "a") == 0
    assert r.lrange(keys.processing(C, CONV), 0, -1) == ["b"]
    # progress resets the batch's attempts (and the marks of the runs counted in them); the
    # rest of its ledger stays while it is in processing
    assert r.hgetall(keys.ledger(C, CONV)) == {"part:1-1:0": "sent:9"}
    assert complete(s, r, "me", '{"error":"x"}', "b") == 0
    assert r.lrange(keys.dead_letters(C), 0, -1) == ['{"error":"x"}']
    assert not r.exists(keys.ledger(C, CONV))


def test_a_run_takes_back_its_own_counted_attempt_once_and_only_that(s: Scripts, r) -> None:
    """RELEASE_ATTEMPT (review finding 2): a run that stops for a reason that is not the
    batch's own takes back the attempt its claim counted; once; a late one after the batch
    was completed, or after a newer run's claim, takes back nothing else."""
    r.rpush(keys.queue(C, CONV), "a")
    r.set(keys.lease(C, CONV), "r1")
    assert claim(s, r, "r1", 5).attempts == 0
    r.set(keys.lease(C, CONV), "r2")  # r1 lost its lease; r2 claims the leftover batch
    assert claim(s, r, "r2", 5).attempts == 1
    assert s.batch.release_attempt(C, CONV, "r1").run() is True
    assert r.hget(keys.ledger(C, CONV), ATTEMPTS) == "1"  # r2's attempt alone
    assert s.batch.release_attempt(C, CONV, "r1").run() is False  # once
    assert r.hget(keys.ledger(C, CONV), ATTEMPTS) == "1"
    complete(s, r, "r2", "", "a")  # answered: the ledger goes
    assert s.batch.release_attempt(C, CONV, "r2").run() is False
    assert not r.exists(keys.ledger(C, CONV))  # no stray ledger left behind


def test_the_dead_letter_list_keeps_the_newest_entries_and_counts_what_it_drops(s: Scripts, r) -> None:
    r.set(keys.lease(C, CONV), "me")
    for i in range(5):
        r.rpush(keys.processing(C, CONV), f"m{i}")
        assert complete(s, r, "me", f"letter-{i}", f"m{i}", most=3) == (1 if i > 2 else 0)
    assert r.lrange(keys.dead_letters(C), 0, -1) == ["letter-2", "letter-3", "letter-4"]
    assert r.hget(keys.stats(C), "dead_letters_dropped") == "2"
    assert r.hget(keys.stats(C), "dead_letters") == "5"


def test_release_only_by_holder_and_only_when_empty(s: Scripts, r) -> None:
    r.set(keys.lease(C, CONV), "me")
    r.sadd(keys.conversation_index(C), CONV)
    r.rpush(keys.queue(C, CONV), "late")
    with pytest.raises(LeaseLost):
        s.schedule.release_if_empty(C, CONV, "other").run()
    assert s.schedule.release_if_empty(C, CONV, "me").run() is False  # no lost wake-up
    r.delete(keys.queue(C, CONV))
    r.zadd(keys.due(C), {CONV: 1.0})  # left by a message this run already answered
    assert s.schedule.release_if_empty(C, CONV, "me").run() is True
    assert not r.exists(keys.lease(C, CONV), keys.due(C))
    assert not r.sismember(keys.conversation_index(C), CONV)


def test_claim_due_dispatches_a_due_conversation_once_and_only_when_due(s: Scripts, r) -> None:
    r.zadd(keys.due(C), {CONV: time.time() + 60})
    not_due = Dispatch(DueClaim.NOT_DUE, "", 0)
    assert s.schedule.claim_due(C, CONV, "t1", 5000).run() == not_due  # not due yet
    r.zadd(keys.due(C), {CONV: time.time() - 1})
    assert s.schedule.claim_due(C, CONV, "t1", 5000).run() == Dispatch(DueClaim.DISPATCHED, "t1", 0)
    assert r.get(keys.lease(C, CONV)) == "t1" and not r.exists(keys.due(C))
    assert s.schedule.claim_due(C, CONV, "t2", 5000).run() == not_due  # a second dispatcher
    r.zadd(keys.due(C), {CONV: time.time() - 1})  # due again while t1 holds the lease
    held = s.schedule.claim_due(C, CONV, "t3", 5000).run()
    assert (held.claim, held.holder) == (DueClaim.HELD, "t1") and 0 < held.lease_ms_left <= 5000
    assert not r.exists(keys.due(C))


def test_defer_schedules_and_gives_up_the_lease_only_by_its_holder(s: Scripts, r) -> None:
    r.set(keys.lease(C, CONV), "me#1")
    with pytest.raises(LeaseLost):
        s.schedule.defer(C, CONV, "other", 3).run()
    assert not r.exists(keys.due(C))
    s.schedule.defer(C, CONV, "me#1", 3).run()
    assert not r.exists(keys.lease(C, CONV))
    assert 2.9 < r.zscore(keys.due(C), CONV) - time.time() <= 3.1


def test_a_run_starts_only_on_its_own_task_id_or_a_free_lease(s: Scripts, r) -> None:
    lease = keys.lease(C, CONV)
    assert s.lease.start_run(lease, "task-a", "task-a#1", 1000).run() is True  # free: taken
    # the same task id delivered again finds a run, not its id: a second run cannot start
    assert s.lease.start_run(lease, "task-a", "task-a#2", 1000).run() is False
    assert r.get(lease) == "task-a#1"
    r.set(lease, "task-b", px=1000)  # published by the dispatcher, not started yet
    assert s.lease.start_run(lease, "task-b", "task-b#1", 5000).run() is True
    assert r.get(lease) == "task-b#1" and r.pttl(lease) > 4000


def test_renew_hand_over_and_delete_are_compare_and_set(s: Scripts, r) -> None:
    lease = keys.lease(C, CONV)
    assert s.lease.renew(lease, "a#1", 1000).run() is False  # free: a renewal takes nothing
    assert r.get(lease) is None
    r.set(lease, "a#1", px=500)
    assert s.lease.renew(lease, "a#2", 9000).run() is False  # another run of the same task
    assert s.lease.renew(lease, "a#1", 9000).run() is True and r.pttl(lease) > 8000
    assert s.lease.hand_over(lease, "b", "c", 1000).run() is False
    assert s.lease.hand_over(lease, "a#1", "c", 9000).run() is True
    assert r.get(lease) == "c" and r.pttl(lease) > 8000
    r.set(keys.handoff(C, CONV), "agent")  # a human's takeover: a reset keyword keeps it
    assert s.ownership.apply_event(C, CONV, Event.RESET_KEYWORD, 60).run() is Holder.HUMAN
    assert r.exists(keys.handoff(C, CONV))
    r.set(keys.handoff(C, CONV), "bot")
    assert s.ownership.apply_event(C, CONV, Event.RESET_KEYWORD, 60).run() is Holder.BOT
    assert not r.exists(keys.handoff(C, CONV))


def store(s: Scripts, r, run: str, look: int, *message_fields: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The fragments that superseded the answer; [] when it was stored."""
    answer = '{"parts":["hi"],"handoff":false}'
    result = s.ledger.store_answer(C, CONV, run, "answer:1-2", answer, look, list(message_fields)).run()
    assert result.stored == (not result.newer)
    return result.newer


def test_store_answer_needs_the_lease_and_gives_way_to_newer_fragments(s: Scripts, r) -> None:
    r.rpush(keys.processing(C, CONV), "a", "b")
    r.rpush(keys.queue(C, CONV), "c")
    with pytest.raises(LeaseLost):
        store(s, r, "me", 10, "msg:1", "msg:2")
    r.set(keys.lease(C, CONV), "me")
    # a fragment arrived while the bot thought: it joins the batch, the stale answer is not stored
    assert store(s, r, "me", 10, "msg:1", "msg:2") == ["c"]
    assert r.lrange(keys.processing(C, CONV), 0, -1) == ["a", "b", "c"]
    assert not r.exists(keys.ledger(C, CONV))
    r.rpush(keys.queue(C, CONV), "d")
    assert store(s, r, "me", 0, "msg:1", "msg:2") == []  # not looking: stored as it is
    assert r.hgetall(keys.ledger(C, CONV)) == {
        "answer:1-2": '{"parts":["hi"],"handoff":false}',
        "msg:1": "answer:1-2",
        "msg:2": "answer:1-2",
    }


def test_a_part_is_marked_pending_only_with_the_lease_and_recorded_sent_only_over_its_own_mark(
    s: Scripts, r
) -> None:
    with pytest.raises(LeaseLost):
        s.ledger.mark_part(C, CONV, "me", "part:1-2:0", "pending:5", "d1", 300).run()
    assert not r.exists(keys.ledger(C, CONV), keys.own_pending(C, CONV))
    r.set(keys.lease(C, CONV), "me")
    s.ledger.mark_part(C, CONV, "me", "part:1-2:0", "pending:5", "d1", 300).run()
    assert r.hget(keys.ledger(C, CONV), "part:1-2:0") == "pending:5"
    assert r.sismember(keys.own_pending(C, CONV), "d1") and r.ttl(keys.own_pending(C, CONV)) > 0
    # a run whose mark was overwritten (another run posts the part now) records nothing
    assert s.ledger.record_sent(C, CONV, "part:1-2:0", "pending:4", "sent:99", 99, 60).run() is False
    assert r.get(keys.own_reply(C, 99)) == "1"  # but the message it did create is ours all the same
    assert s.ledger.record_sent(C, CONV, "part:1-2:0", "pending:5", "sent:99", 99, 60).run() is True
    assert r.hget(keys.ledger(C, CONV), "part:1-2:0") == "sent:99"
    assert r.hget(keys.stats(C), "replies_sent") == "1"


def test_a_handoff_and_a_batch_error_are_written_only_with_the_lease(s: Scripts, r) -> None:
    for write in (s.batch.mark_handoff(C, CONV, "me", 60), s.batch.note_error(C, CONV, "me", "boom")):
        with pytest.raises(LeaseLost):
            write.run()
    assert not r.exists(keys.handoff(C, CONV), keys.ledger(C, CONV), keys.stats(C))
    r.set(keys.lease(C, CONV), "me")
    s.batch.mark_handoff(C, CONV, "me", 60).run()
    assert r.get(keys.handoff(C, CONV)) == "bot" and 0 < r.ttl(keys.handoff(C, CONV)) <= 60
    assert r.hget(keys.stats(C), "handoffs") == "1"
    s.batch.note_error(C, CONV, "me", "boom").run()
    assert r.hget(keys.ledger(C, CONV), ERROR) == "boom"
    assert r.hget(keys.stats(C), "batch_failures") == "1"


def test_rescue_schedules_only_stranded_conversations(s: Scripts, r) -> None:
    r.sadd(keys.conversation_index(C), CONV)
    assert s.schedule.rescue(C, CONV).run() is Rescue.EMPTY  # nothing to do: forgotten
    assert not r.sismember(keys.conversation_index(C), CONV)
    r.rpush(keys.processing(C, CONV), "in-flight")
    r.set(keys.lease(C, CONV), "alive#1")
    assert s.schedule.rescue(C, CONV).run() is Rescue.BUSY  # live lease
    r.delete(keys.lease(C, CONV))
    assert s.schedule.rescue(C, CONV).run() is Rescue.RESCHEDULED  # its holder died: scheduled now
    assert r.zscore(keys.due(C), CONV) <= time.time()
    assert s.schedule.rescue(C, CONV).run() is Rescue.BUSY  # already scheduled


def test_enqueue_records_the_session(s: Scripts, r) -> None:
    enqueue(s, r, "m1", "t", 1)
    assert abs(r.zscore(keys.sessions(C), CONV) - time.time()) < 2  # Redis's clock
    assert r.hget(keys.session_accounts(C), CONV) == "1"


def test_agent_reply_tells_own_replies_from_a_takeover(s: Scripts, r) -> None:
    def reply(message_id: int, digest: str) -> Sender:
        return s.ownership.agent_reply(company(), CONV, message_id, digest, Seen("pending")).run()  # type: ignore[arg-type]

    r.sadd(keys.own_pending(C, CONV), "digest-of-our-reply")
    assert reply(77, "digest-of-our-reply") is Sender.OWN
    r.set(keys.own_reply(C, 77), "1")
    assert reply(77, "other") is Sender.OWN
    assert not r.exists(keys.handoff(C, CONV))
    assert reply(78, "other") is Sender.TAKEOVER
    assert r.get(keys.status(C, CONV)) == "pending"  # seen, for the next change
    assert r.get(keys.handoff(C, CONV)) == "agent" and 0 < r.ttl(keys.handoff(C, CONV)) <= 600


def test_expire_sessions_takes_each_idle_session_once(s: Scripts, r) -> None:
    now = time.time()
    r.zadd(keys.sessions(C), {"1": now - 900, "2": now - 800, "3": now - 100})
    r.hset(keys.session_accounts(C), mapping={"1": "5", "2": "5", "3": "5"})
    assert s.ownership.expire_sessions(C, 500, 1).run() == [("1", "5")]  # at most ARGV[2]
    assert s.ownership.expire_sessions(C, 500, 10).run() == [("2", "5")]
    assert s.ownership.expire_sessions(C, 500, 10).run() == []
    assert r.zrange(keys.sessions(C), 0, -1) == ["3"]


def test_batch_runs_a_script_beside_commands_in_one_round_trip_even_after_a_script_flush(
    rdb: redis.Redis,
) -> None:
    """A Redis restart empties the script cache: the EVALSHA in a RoundTrip comes back NOSCRIPT, did
    nothing, and is run again; the other commands ran once."""
    scripts = Scripts(rdb)
    lease = keys.lease(C, CONV)
    scripts.lease.start_run("warm-up", "x", "x#1", 1000).run()  # loads the script into the cache
    for flush in (False, True):
        rdb.delete(lease, "counter")
        if flush:
            rdb.script_flush()
        batch = RoundTrip(rdb)
        batch.add(scripts.lease.start_run(lease, "T1", "T1", 5000))
        batch.pipe.incr("counter")
        batch.pipe.get(lease)
        seen = None if flush else "T1"  # after a flush the GET ran before the script's re-run
        assert batch.execute() == [True, 1, seen]  # the script's reply decoded
        assert rdb.get(lease) == "T1" and rdb.get("counter") == "1"  # taken once, counted once


def test_many_calls_after_a_script_flush_go_again_in_one_more_round_trip(
    rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper sends hundreds of RESCUE calls in one RoundTrip: after a Redis restart
    they come back NOSCRIPT together and go again together, not one round trip each."""
    scripts = Scripts(rdb)
    leases = [keys.lease(C, str(n)) for n in range(50)]
    rdb.delete(*leases)
    rdb.script_flush()
    batch = RoundTrip(rdb)
    for lease in leases:
        batch.add(scripts.lease.start_run(lease, "T1", "T1", 5000))
    sent = []
    send = redis.connection.Connection.send_packed_command
    monkeypatch.setattr(
        redis.connection.Connection,
        "send_packed_command",
        lambda self, *a, **k: (sent.append(1), send(self, *a, **k))[1],
    )
    assert batch.execute() == [True] * 50
    monkeypatch.undo()
    assert len(sent) == 2 and all(rdb.get(lease) == "T1" for lease in leases)


def test_spend_bot_call_takes_from_the_days_budget_until_it_is_used_up(s: Scripts, r) -> None:
    assert [s.housekeeping.spend_bot_call(C, "2026-11-26", 2).run() for _ in range(3)] == [1, 2, None]
    assert r.get(keys.bot_calls_day(C, "2026-11-26")) == "2"  # the refused call took nothing
    assert 0 < r.ttl(keys.bot_calls_day(C, "2026-11-26")) <= 2 * 24 * 3600
    assert s.housekeeping.spend_bot_call(C, "2026-11-27", 2).run() == 1  # a new day, a new budget
    assert [s.housekeeping.spend_bot_call(C, "2026-11-28", 0).run() for _ in range(3)] == [
        1,
        2,
        3,
    ]  # 0: no ceiling


def test_every_outgoing_message_to_the_contact_notes_a_turn(s: Scripts, r) -> None:
    """The gateway's posted reply (RECORD_SENT), a human's reply (AGENT_REPLY) and an
    automation's message (OBSERVE, turn) each note when the contact was last answered:
    their next message is an answer, not a fragment (app/batching/pace.py). The gateway's own
    reply coming back notes nothing more."""
    turns = keys.turns(C)
    s.ledger.record_sent(C, CONV, "part:1-1:0", "pending:1", "sent:9", 9, 60).run()
    first = float(r.hget(turns, CONV))
    assert abs(first - time.time()) < 2
    r.hdel(turns, CONV)
    r.set(keys.own_reply(C, 9), "1")
    assert s.ownership.agent_reply(company(), CONV, 9, "d", Seen("pending")).run() is Sender.OWN  # type: ignore[arg-type]
    assert r.hget(turns, CONV) is None
    assert s.ownership.agent_reply(company(), CONV, 10, "d", Seen("pending")).run() is Sender.TAKEOVER  # type: ignore[arg-type]
    assert r.hget(turns, CONV) is not None
    r.hdel(turns, CONV)
    s.ownership.observe(company(), "43", Seen("pending"), turn=False).run()  # type: ignore[arg-type]
    assert r.hget(turns, "43") is None
    s.ownership.observe(company(), "43", Seen("pending"), turn=True).run()  # type: ignore[arg-type]
    assert r.hget(turns, "43") is not None


def test_every_script_names_its_keys_and_arguments_before_using_them() -> None:
    """Each script binds KEYS[n] and ARGV[n] to names on its first lines; its body uses the
    names (a positional reference later in a body is what made ENQUEUE unreadable)."""
    from app.store.scripts import SOURCES

    for name, source in SOURCES.items():
        binding = re.compile(r"^local [\w, ]+ = (KEYS|ARGV)\[")
        body = [line for line in source.splitlines() if not binding.match(line)]
        positional = [line for line in body if re.search(r"(KEYS|ARGV)\[\d+\]", line)]
        assert positional == [], (name, positional)


def test_the_loop_guard_counts_a_batch_once_and_only_within_its_window(s: Scripts, r) -> None:
    def call(member: str, window: float = 600) -> int:
        return s.housekeeping.count_bot_call(C, CONV, window, 2, member).run()

    assert call("a") == 0 and call("a") == 0  # a batch run again is not counted twice
    assert call("b") == 1
    assert call("c") == 2 and call("c") == 2  # the most reached: c is not counted
    assert r.zcard(keys.recent_bot_calls(C, CONV)) == 2 and r.ttl(keys.recent_bot_calls(C, CONV)) > 0
    time.sleep(0.05)
    assert call("d", window=0.01) == 0  # the older calls left the window


def test_a_follow_up_ladder_moves_only_while_it_follows_the_answer_read(s: Scripts, r) -> None:
    """The sender read answer A's ladder; a newer answer B wrote its own meanwhile: moving
    or ending A's leaves B's ladder and its mark as they are."""
    ladder, schedule = keys.follow_up(C, CONV), keys.follow_ups(C)
    r.hset(ladder, mapping={"answer": "A", "stage": 0})
    assert s.housekeeping.advance_follow_up(C, CONV, "A", 1, 500.0).run() is True
    assert r.hget(ladder, "stage") == "1" and r.zscore(schedule, CONV) == 500.0
    r.hset(ladder, mapping={"answer": "B", "stage": 0})
    r.zadd(schedule, {CONV: 900.0})
    assert s.housekeeping.advance_follow_up(C, CONV, "A", 2, 600.0).run() is False
    assert s.housekeeping.advance_follow_up(C, CONV, "A", None, 0).run() is False
    assert r.hget(ladder, "stage") == "0" and r.zscore(schedule, CONV) == 900.0
    assert s.housekeeping.advance_follow_up(C, CONV, "B", None, 0).run() is True
    assert not r.exists(ladder)
