"""The dispatcher (app/schedule/dispatcher.py) against the real Redis: due entries become drain
tasks once, earliest first, for this process's free slots only."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import redis
from celery import Celery

from app.bots import BotReply, EchoBot
from app.chatwoot.messages import StoredMessage
from app.schedule.dispatcher import Dispatcher
from app.settings import load_settings
from app.store import keys
from app.store.client import redis_now
from app.store.scripts import Scripts
from tests.conftest import base_env, companies_env, dry_run_drainer


def dispatcher(redis_url: str, rdb: redis.Redis) -> Dispatcher:
    settings = load_settings(base_env(redis_url, "http://127.0.0.1:9"))
    return Dispatcher(rdb, Scripts(rdb), Celery(broker=redis_url, backend=redis_url), settings)


def test_claims_the_earliest_due_entries_and_says_when_to_look_again(
    redis_url: str, rdb: redis.Redis
) -> None:
    now = time.time()
    rdb.zadd(keys.due("default"), {"1": now - 5, "2": now - 1, "3": now + 30})
    claims, wait = dispatcher(redis_url, rdb).claim(limit=1)
    assert [c.conversation for c in claims] == ["1"] and wait == 0.0  # more is due: at once
    assert rdb.get(keys.lease("default", "1")) == claims[0].task_id
    claims, wait = dispatcher(redis_url, rdb).claim(limit=5)
    assert [c.conversation for c in claims] == ["2"] and wait is not None and 29 < wait <= 30
    assert rdb.zrange(keys.due("default"), 0, -1) == ["3"]


def test_the_earliest_due_entry_goes_first_whichever_company_it_belongs_to(
    redis_url: str, rdb: redis.Redis, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    env = companies_env(redis_url, tmp_path, [{"company_id": "a"}, {"company_id": "b"}])
    settings = load_settings(env)
    d = Dispatcher(rdb, Scripts(rdb), Celery(broker=redis_url, backend=redis_url), settings)
    now = time.time()
    rdb.zadd(keys.due("a"), {"1": now - 1, "2": now - 0.5})
    rdb.zadd(keys.due("b"), {"9": now - 5})
    claims, wait = d.claim(limit=1)
    assert [(c.company, c.conversation) for c in claims] == [("b", "9")] and wait == 0.0
    assert [(c.company, c.conversation) for c in d.claim(limit=5)[0]] == [("a", "1"), ("a", "2")]


def test_publishes_only_for_free_slots(redis_url: str, rdb: redis.Redis) -> None:
    d = dispatcher(redis_url, rdb)
    d.capacity = 2
    assert d.free_slots() == 2
    d.task_started()
    assert d.free_slots() == 1
    now = time.time()
    rdb.zadd(keys.due("default"), {str(c): now - 1 for c in range(5)})
    d.dispatch()  # one free slot: one task published, the rest left to the running task
    assert rdb.zcard(keys.due("default")) == 4 and d.free_slots() == 0
    d.task_started()  # the published task started here
    d.task_finished()
    d.task_finished()
    assert d.free_slots() == 2


def test_two_dispatchers_at_once_never_dispatch_a_conversation_twice(
    redis_url: str, rdb: redis.Redis
) -> None:
    """A deploy overlap: two containers' dispatchers look at the same due entries."""
    now = time.time()
    rdb.zadd(keys.due("default"), {str(c): now - 1 for c in range(300)})
    first, second = dispatcher(redis_url, rdb), dispatcher(redis_url, rdb)
    claimed: list[list[str]] = [[], []]

    def run(d: Dispatcher, into: list[str]) -> None:
        while rdb.zcard(keys.due("default")):
            into.extend(c.conversation for c in d.claim(limit=7)[0])

    threads = [
        threading.Thread(target=run, args=(d, out)) for d, out in zip((first, second), claimed, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    everything = claimed[0] + claimed[1]
    assert sorted(everything, key=int) == [str(c) for c in range(300)]  # each once
    assert claimed[0] and claimed[1]  # both took part


class HeldBot:
    """A bot that thinks until the test lets it answer."""

    def __init__(self) -> None:
        self.asked, self.answer_now = threading.Event(), threading.Event()

    def answer(self, request: dict) -> BotReply:
        self.asked.set()
        self.answer_now.wait(10)
        return BotReply(("Open at 9.",))


def test_a_live_run_is_never_taken_over_because_a_second_delivery_of_its_task_finished(
    redis_url: str, rdb: redis.Redis
) -> None:
    """Review finding 4: task T is delivered twice. Its first delivery drains as run T#r1;
    the second exits at once (not the holder) and Celery records T as SUCCESS. When run 1's
    renewal is late and a new fragment makes the conversation due, the dispatcher must not
    read T's SUCCESS as "the holder finished": the holder is a run, alive. Taking its lease
    over would start a second drain of the conversation (a second bot call, a second reply)."""
    first = dry_run_drainer(redis_url, rdb, LEASE_TTL_SECONDS="4")  # task T1, lease named T1
    bot = HeldBot()
    first = dataclasses.replace(first, bot=bot)
    rdb.rpush(keys.queue("default", "42"), StoredMessage(1, "42", 1, "open?", redis_now(rdb) - 30).to_json())
    outcome: list[str] = []
    running = threading.Thread(target=lambda: outcome.append(first.run()))
    running.start()
    assert bot.asked.wait(5)
    holder = rdb.get(keys.lease("default", "42"))
    assert holder.startswith("T1#")
    second = dataclasses.replace(first, bot=EchoBot())
    assert second.run() == "not-holder"
    celery = Celery(broker=redis_url, backend=redis_url)
    celery.backend.store_result("T1", "not-holder", "SUCCESS")  # what the worker records for it
    rdb.pexpire(keys.lease("default", "42"), 1000)  # run 1's renewal is late (under half its TTL)
    rdb.zadd(keys.due("default"), {"42": redis_now(rdb)})  # a new fragment's batch is due
    settings = load_settings(base_env(redis_url, "http://127.0.0.1:9", LEASE_TTL_SECONDS="4"))
    Dispatcher(rdb, Scripts(rdb), celery, settings).claim()
    assert rdb.get(keys.lease("default", "42")) == holder  # not handed to a fresh task
    assert rdb.hget(keys.stats("default"), "lease_takeovers") is None
    bot.answer_now.set()
    running.join(10)
    assert outcome == ["released"]
    assert [json.loads(e)["content"] for e in rdb.lrange(keys.outbox("default"), 0, -1)] == ["Open at 9."]
