"""The sweeper (app/schedule/sweeper.py) against the real Redis: every stranded
conversation of a large index is rescheduled, the rest left as they are, in a few round
trips rather than several per conversation."""

from __future__ import annotations

import time

import pytest
import redis
import redis.connection
from celery import Celery

from app.metrics import Stat
from app.schedule.sweeper import SWEEP_CHUNK, sweep
from app.settings import load_settings
from app.store import keys
from app.store.scripts import Scripts
from tests.conftest import base_env


def test_a_large_index_is_swept_in_chunks_and_only_stranded_work_is_rescheduled(
    redis_url: str, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(base_env(redis_url, "http://127.0.0.1:9"))
    total = 2 * SWEEP_CHUNK + 37
    stranded, scheduled, leased, empty = [], [], [], []
    future = time.time() + 60
    pipe = rdb.pipeline(transaction=False)
    for n in range(total):
        conv = str(n)
        pipe.sadd(keys.conversation_index("default"), conv)
        kind = n % 4
        if kind != 3:
            pipe.rpush(keys.queue("default", conv), f'{{"id":{n}}}')
        if kind == 0:
            stranded.append(conv)  # messages, no lease, no due entry: its drainer is gone
        elif kind == 1:
            pipe.zadd(keys.due("default"), {conv: future})
            scheduled.append(conv)
        elif kind == 2:
            pipe.set(keys.lease("default", conv), f"task-{n}#run", px=60_000)  # a live run holds it
            leased.append(conv)
        else:
            empty.append(conv)  # nothing left: it leaves the index
    pipe.execute()
    scripts, celery = Scripts(rdb), Celery(broker=redis_url, backend=redis_url)
    round_trips = []
    send = redis.connection.Connection.send_packed_command
    monkeypatch.setattr(
        redis.connection.Connection,
        "send_packed_command",
        lambda self, *a, **k: (round_trips.append(1), send(self, *a, **k))[1],
    )

    rescued = sweep(rdb, scripts, celery, settings)

    monkeypatch.undo()
    assert rescued == len(stranded)
    due = {member: score for member, score in rdb.zrange(keys.due("default"), 0, -1, withscores=True)}
    assert all(due[conv] <= time.time() for conv in stranded)  # due now
    assert all(due[conv] == future for conv in scheduled)  # left as they were
    assert not any(conv in due for conv in leased)
    index = rdb.smembers(keys.conversation_index("default"))
    assert index == set(stranded) | set(scheduled) | set(leased)
    assert rdb.hget(keys.stats("default"), Stat.SWEEPER_RESCUES) == str(len(stranded))
    # SSCAN's pages and one round trip a chunk (the script, the lease's time left and its
    # holder for each conversation): not one to three round trips per conversation.
    assert len(round_trips) <= 4 * (total // SWEEP_CHUNK + 1), len(round_trips)
    assert sweep(rdb, scripts, celery, settings) == 0
