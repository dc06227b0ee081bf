"""The lease keeper (app.keeper): what a renewal proves, and runs past their deadline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from app.errors import LeaseLost
from app.schedule.lease import LeaseKeeper, new_run_id, task_of
from app.store import keys
from app.store.client import connect
from app.store.scripts import Scripts
from tests.support import RedisServer


def test_run_ids_name_one_run_of_a_task() -> None:
    first, second = new_run_id("task-1"), new_run_id("task-1")
    assert first != second and task_of(first) == task_of(second) == "task-1"
    assert task_of("task-2") == "task-2"  # a published task that has not started


def test_the_lease_keeper_renews_what_its_runs_hold_and_reports_what_they_lost(rdb: redis.Redis) -> None:
    keeper = LeaseKeeper(rdb, Scripts(rdb), ttl=4.0, run_max=60.0)
    kept, taken, done = (keys.lease("default", c) for c in ("1", "2", "3"))
    for lease, run_id in ((kept, "A#1"), (taken, "B#1"), (done, "C#1")):
        rdb.set(lease, run_id, px=1000)
    now = time.monotonic()
    run_a, run_b, run_c = (
        keeper.keep(kept, "A#1", now),
        keeper.keep(taken, "B#1", now),
        keeper.keep(done, "C#1", now),
    )
    keeper.drop(run_c)
    rdb.delete(done)  # C released its lease and left
    rdb.set(taken, "B#2", px=1000)  # B's lease went to another run of the same task
    keeper.renew()
    assert 3000 < rdb.pttl(kept) <= 4000 and run_a.proven()  # renewed to the full TTL
    assert run_b.lost.is_set() and not run_b.proven() and rdb.get(taken) == "B#2"  # the other run untouched
    assert rdb.get(done) is None  # a dropped lease is never brought back
    keeper.renew()
    assert rdb.get(taken) == "B#2"
    keeper.drop(run_a)
    keeper.drop(run_b)


def test_a_renewal_that_fails_with_a_redis_error_proves_nothing(tmp_path: Path) -> None:
    """A drainer cut off from Redis is not told its lease was taken; it must stop on its
    own once its last successful renewal is too old to prove the lease (invariant 10)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        client = connect(server.url)
        lease = keys.lease("default", "9")
        keeper = LeaseKeeper(client, Scripts(client), ttl=1.0, run_max=60.0)
        client.set(lease, "A#1", px=1000)
        run = keeper.keep(lease, "A#1", time.monotonic())
        keeper.renew()
        run.check()  # proven
        server.stop()
        keeper.renew()  # fails with a Redis error: logged, nothing proven
        assert not run.lost.is_set()  # nobody said the lease was taken...
        time.sleep(0.8)
        assert not run.proven()  # ...but a renewal 0.8 TTL old no longer proves it
        with pytest.raises(LeaseLost):
            run.check()
        keeper.drop(run)
    finally:
        server.stop()


def test_a_run_past_its_deadline_is_no_longer_renewed_and_is_reported_stuck(rdb: redis.Redis) -> None:
    keeper = LeaseKeeper(rdb, Scripts(rdb), ttl=4.0, run_max=0.3)
    lease = keys.lease("default", "8")
    rdb.set(lease, "A#1", px=4000)
    run = keeper.keep(lease, "A#1", time.monotonic())
    keeper.renew()
    assert run.proven() and keeper.stuck() == []
    time.sleep(0.4)
    rdb.pexpire(lease, 1000)
    keeper.renew()
    assert rdb.pttl(lease) <= 1000  # the heartbeat stopped: the lease runs out, a fresh run takes over
    assert run.lost.is_set() and keeper.stuck() == [run]
    keeper.drop(run)
    assert keeper.stuck() == []
