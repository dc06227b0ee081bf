"""Each Lua script on fakeredis (with lupa): the invariants of DESIGN.md §6."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from app import keys
from app.scripts import Batch, Scripts

C, CONV = "acme", "42"


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def s(r: fakeredis.FakeRedis) -> Scripts:
    return Scripts(r)


def enqueue(s: Scripts, r, payload: str, task: str, msg_id: int, delivery: str = "", status: str = ""):  # type: ignore[no-untyped-def]
    return s.enqueue(
        keys=[
            keys.queue(C, CONV),
            keys.active_task(C, CONV),
            keys.seen_message(C, msg_id),
            keys.seen_delivery(C, delivery or "-"),
            keys.conversation_index(C),
            keys.stats(C),
            keys.handoff(C, CONV),
            keys.sessions(C),
            keys.session_accounts(C),
        ],
        args=[payload, 3600, 3, task, 5000, 60, CONV, "1" if delivery else "0", status, 1000, 1],
        client=r,
    )


def test_enqueue_pushes_sets_ttl_and_takes_a_free_lease(s: Scripts, r) -> None:
    result = enqueue(s, r, "m1", "task-a", 1)
    assert result == ["queued", 1, "task-a", 5000, 1]
    assert r.lrange(keys.queue(C, CONV), 0, -1) == ["m1"]
    assert 3500 < r.ttl(keys.queue(C, CONV)) <= 3600
    assert r.get(keys.active_task(C, CONV)) == "task-a"
    assert r.sismember(keys.conversation_index(C), CONV)


def test_enqueue_with_live_lease_reports_the_holder(s: Scripts, r) -> None:
    enqueue(s, r, "m1", "task-a", 1)
    status, length, holder, pttl, acquired = enqueue(s, r, "m2", "task-b", 2)
    assert (status, length, holder, acquired) == ("queued", 2, "task-a", 0)
    assert 0 < pttl <= 5000


def test_enqueue_deduplicates_messages_and_deliveries(s: Scripts, r) -> None:
    enqueue(s, r, "m1", "t", 1, delivery="d1")
    assert enqueue(s, r, "m1", "t", 1, delivery="d9")[0] == "duplicate"
    assert enqueue(s, r, "m2", "t", 2, delivery="d1")[0] == "duplicate"
    assert r.llen(keys.queue(C, CONV)) == 1
    assert r.hget(keys.stats(C), "webhooks_duplicate") == "2"


def test_enqueue_refuses_beyond_the_queue_limit(s: Scripts, r) -> None:
    for i in range(3):
        enqueue(s, r, f"m{i}", "t", i)
    assert enqueue(s, r, "m3", "t", 3)[0] == "full"
    assert r.llen(keys.queue(C, CONV)) == 3
    assert not r.exists(keys.seen_message(C, 3))  # a refused message may come again


def test_enqueue_ignores_handed_off_conversation_until_pending(s: Scripts, r) -> None:
    r.set(keys.handoff(C, CONV), "bot")
    assert enqueue(s, r, "m1", "t", 1, status="open")[0] == "handoff"
    assert enqueue(s, r, "m1", "t", 1, status="pending")[0] == "queued"
    assert not r.exists(keys.handoff(C, CONV))


def test_claim_requires_the_lease_and_resumes_leftovers_first(s: Scripts, r) -> None:
    claim_keys = [keys.queue(C, CONV), keys.processing(C, CONV), keys.active_task(C, CONV)]
    r.rpush(keys.queue(C, CONV), "a", "b", "c")
    assert s.claim_batch(keys=claim_keys, args=["intruder", 10, "0"], client=r) is None
    r.set(keys.active_task(C, CONV), "me")
    assert s.claim_batch(keys=claim_keys, args=["me", 2, "0"], client=r) == ["a", "b"]
    assert r.lrange(keys.queue(C, CONV), 0, -1) == ["c"]
    # A leftover batch (its drainer died) comes back before anything new.
    assert s.claim_batch(keys=claim_keys, args=["me", 2, "0"], client=r) == ["a", "b"]


def test_complete_removes_only_with_the_lease_and_records_dead_letters(s: Scripts, r) -> None:
    ck = [
        keys.processing(C, CONV),
        keys.active_task(C, CONV),
        keys.sent_parts(C, CONV),
        keys.dead_letters(C),
        keys.stats(C),
    ]
    r.rpush(keys.processing(C, CONV), "a", "b")
    r.hset(keys.sent_parts(C, CONV), "x:0", "1")
    r.set(keys.active_task(C, CONV), "me")
    assert s.complete(keys=ck, args=["other", "", "a"], client=r) is None
    assert s.complete(keys=ck, args=["me", "", "a"], client=r) == 1
    assert s.complete(keys=ck, args=["me", '{"error":"x"}', "b"], client=r) == 0
    assert r.lrange(keys.dead_letters(C), 0, -1) == ['{"error":"x"}']
    assert not r.exists(keys.sent_parts(C, CONV))


def test_release_only_by_holder_and_only_when_empty(s: Scripts, r) -> None:
    rk = [
        keys.active_task(C, CONV),
        keys.queue(C, CONV),
        keys.processing(C, CONV),
        keys.conversation_index(C),
    ]
    r.set(keys.active_task(C, CONV), "me")
    r.sadd(keys.conversation_index(C), CONV)
    r.rpush(keys.queue(C, CONV), "late")
    assert s.release_if_empty(keys=rk, args=["other", CONV], client=r) == -1
    assert s.release_if_empty(keys=rk, args=["me", CONV], client=r) == 0  # no lost wake-up
    r.delete(keys.queue(C, CONV))
    assert s.release_if_empty(keys=rk, args=["me", CONV], client=r) == 1
    assert not r.exists(keys.active_task(C, CONV))
    assert not r.sismember(keys.conversation_index(C), CONV)


def test_hand_over_and_hold_are_compare_and_set(s: Scripts, r) -> None:
    lease = keys.active_task(C, CONV)
    assert s.hold(keys=[lease], args=["a", 1000, "0"], client=r) == 0  # free, not taking
    assert s.hold(keys=[lease], args=["a", 1000, "1"], client=r) == 1  # free, taking
    assert s.hold(keys=[lease], args=["b", 1000, "1"], client=r) == 0  # held by a
    assert s.hand_over(keys=[lease], args=["b", "c", 1000], client=r) == 0
    assert s.hand_over(keys=[lease], args=["a", "c", 9000], client=r) == 1
    assert r.get(lease) == "c" and r.pttl(lease) > 8000
    assert s.delete_if_equals(keys=[lease], args=["a"], client=r) == 0
    assert s.delete_if_equals(keys=[lease], args=["c"], client=r) == 1


def test_rescue_leases_only_stranded_conversations(s: Scripts, r) -> None:
    rk = [
        keys.active_task(C, CONV),
        keys.queue(C, CONV),
        keys.processing(C, CONV),
        keys.conversation_index(C),
    ]
    r.sadd(keys.conversation_index(C), CONV)
    assert s.rescue(keys=rk, args=["t1", 1000, CONV], client=r) == -1  # nothing to do: forgotten
    assert not r.sismember(keys.conversation_index(C), CONV)
    r.rpush(keys.processing(C, CONV), "in-flight")
    assert s.rescue(keys=rk, args=["t1", 1000, CONV], client=r) == 1
    assert s.rescue(keys=rk, args=["t2", 1000, CONV], client=r) == 0  # live lease
    assert r.get(keys.active_task(C, CONV)) == "t1"


def test_enqueue_records_the_session(s: Scripts, r) -> None:
    enqueue(s, r, "m1", "t", 1)
    assert r.zscore(keys.sessions(C), CONV) == 1000 and r.hget(keys.session_accounts(C), CONV) == "1"


def test_agent_reply_tells_own_replies_from_a_takeover(s: Scripts, r) -> None:
    ak = [keys.own_reply(C, 77), keys.own_pending(C, CONV), keys.handoff(C, CONV), keys.stats(C)]
    r.sadd(keys.own_pending(C, CONV), "digest-of-our-reply")
    assert s.agent_reply(keys=ak, args=["digest-of-our-reply", 0], client=r) == "own"
    r.set(keys.own_reply(C, 77), "1")
    assert s.agent_reply(keys=ak, args=["other", 0], client=r) == "own"
    ak[0] = keys.own_reply(C, 78)
    assert s.agent_reply(keys=ak, args=["other", 600], client=r) == "takeover"
    assert r.get(keys.handoff(C, CONV)) == "agent" and 0 < r.ttl(keys.handoff(C, CONV)) <= 600


def test_expire_sessions_takes_each_idle_session_once(s: Scripts, r) -> None:
    r.zadd(keys.sessions(C), {"1": 100, "2": 200, "3": 900})
    r.hset(keys.session_accounts(C), mapping={"1": "5", "2": "5", "3": "5"})
    sk = [keys.sessions(C), keys.session_accounts(C)]
    assert s.expire_sessions(keys=sk, args=[500, 10], client=r) == ["1", "5", "2", "5"]
    assert s.expire_sessions(keys=sk, args=[500, 10], client=r) == []
    assert r.zrange(keys.sessions(C), 0, -1) == ["3"]


def test_claim_append_moves_new_fragments_beside_the_batch_with_the_lease_only(s: Scripts, r) -> None:
    ck = [keys.queue(C, CONV), keys.processing(C, CONV), keys.active_task(C, CONV)]
    r.rpush(keys.processing(C, CONV), "a")
    r.rpush(keys.queue(C, CONV), "b", "c")
    assert s.claim_batch(keys=ck, args=["me", 10, "1"], client=r) is None
    r.set(keys.active_task(C, CONV), "me")
    assert s.claim_batch(keys=ck, args=["me", 10, "1"], client=r) == ["b", "c"]
    assert r.lrange(keys.processing(C, CONV), 0, -1) == ["a", "b", "c"]


def test_batch_runs_a_script_beside_commands_in_one_round_trip_even_after_a_script_flush(
    rdb: redis.Redis,
) -> None:
    """A Redis restart empties the script cache: the EVALSHA in a Batch comes back NOSCRIPT, did
    nothing, and is run again alone; the other commands ran once."""
    scripts = Scripts(rdb)
    lease = keys.active_task(C, CONV)
    scripts.hold(keys=["warm-up"], args=["x", 1000, "1"])  # loads the script into the cache
    for flush in (False, True):
        rdb.delete(lease, "counter")
        if flush:
            rdb.script_flush()
        batch = Batch(rdb)
        batch.script(scripts.hold, [lease], ["T1", 5000, "1"])
        batch.pipe.incr("counter")
        batch.pipe.get(lease)
        seen = None if flush else "T1"  # after a flush the GET ran before the script's re-run
        assert batch.execute() == [1, 1, seen]
        assert rdb.get(lease) == "T1" and rdb.get("counter") == "1"  # taken once, counted once
