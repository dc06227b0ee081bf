"""The reply ledger, attempts, countdowns and bounded keys, through the real Drainer
against the real Redis (no worker: each run is driven step by step)."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

from app.bots import BotReply, EchoBot
from app.chatwoot.client import DryRunOutbox
from app.chatwoot.messages import StoredMessage
from app.drain import Drainer, drain, post
from app.drain.ledger import ATTEMPTS, ERROR, Ledger
from app.errors import BotError
from app.settings import load_settings
from app.store import keys
from app.store.client import connect, fitness, redis_now
from app.store.scripts import Scripts
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, dry_run_drainer, make_client, post_webhook
from tests.support import ROOT, Proxy, RedisServer, wait_for

CONV = "42"


class CountingEcho(EchoBot):
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def answer(self, request: dict[str, Any]) -> BotReply:
        self.calls.append([m["id"] for m in request["messages"]])
        return super().answer(request)


class NeverAsked:
    def answer(self, request: dict[str, Any]) -> BotReply:
        raise AssertionError("the bot was asked again for an answer the ledger holds")


class BrokenReplier(DryRunOutbox):
    """A Chatwoot client with a bug: any exception, not one the drain knows."""

    def create_message(
        self,
        account_id: int,
        conversation_id: str,
        content: str,
        *,
        choices=(),
        files=(),
        private=False,
        template=None,
    ) -> int | None:
        raise RuntimeError("replier bug")


def raw(message_id: int, content: str, age: float = 30.0, rdb: redis.Redis | None = None) -> str:
    at = (redis_now(rdb) if rdb else 0.0) - age
    return StoredMessage(message_id, CONV, 1, content, received_at=at).to_json()


def outbox(rdb: redis.Redis) -> list[str]:
    return [json.loads(e).get("content") for e in rdb.lrange(keys.outbox("default"), 0, -1)]


def deferred_by(rdb: redis.Redis) -> float:
    """How far ahead the conversation was scheduled (its due entry, Redis's clock)."""
    return rdb.zscore(keys.due("default"), CONV) - redis_now(rdb)


def successor(drainer: Drainer, rdb: redis.Redis, **changes: Any) -> Drainer:
    """The run the dispatcher would start for the deferred conversation (its lease named)."""
    task_id = f"T{len(drainer.task_id) + 1}-{rdb.incr('test:tasks')}"
    rdb.zrem(keys.due("default"), CONV)
    rdb.set(keys.lease("default", CONV), task_id, px=20000)
    return dataclasses.replace(drainer, task_id=task_id, **changes)


def test_a_resumed_batch_posts_the_stored_answer_and_never_asks_the_bot(redis_url: str, rdb: redis.Redis):
    """Invariant 9: once the bot has answered, that stored answer is the only one posted."""
    drainer = dry_run_drainer(redis_url, rdb)
    drainer = dataclasses.replace(drainer, bot=NeverAsked())
    rdb.rpush(keys.processing("default", CONV), raw(1, "hi", rdb=rdb), raw(2, "book me", rdb=rdb))
    rdb.hset(
        keys.ledger("default", CONV),
        mapping={
            "answer:1-2": json.dumps({"parts": ["part one", "part two"], "handoff": False}),
            "msg:1": "answer:1-2",
            "msg:2": "answer:1-2",
            "part:1-2:0": "sent:777",  # posted before the crash
        },
    )
    assert drainer.run() == "released"
    assert outbox(rdb) == ["part two"]  # the stored answer's remaining part, once
    assert not rdb.exists(keys.processing("default", CONV), keys.ledger("default", CONV))


def test_a_stored_answer_keeps_its_messages_together_whatever_the_rest_would_be_grouped_into(
    redis_url: str, rdb: redis.Redis
):
    drainer = dry_run_drainer(redis_url, rdb, BATCH_MAX_AVG_CHARS="400")
    bot = CountingEcho()
    drainer = dataclasses.replace(drainer, bot=bot)
    # message 2 was answered (stored) before a crash; 2 and 3 alone would now be joined
    rdb.rpush(keys.processing("default", CONV), raw(2, "y" * 100, rdb=rdb), raw(3, "z" * 500, rdb=rdb))
    rdb.hset(
        keys.ledger("default", CONV),
        mapping={
            "answer:2-2": json.dumps({"parts": ["answer to 2"], "handoff": False}),
            "msg:2": "answer:2-2",
        },
    )
    assert drainer.run() == "released"
    assert bot.calls == [[3]]  # 3 alone; 2 keeps its stored answer
    assert outbox(rdb) == ["answer to 2", "z" * 500]


def test_an_exception_counts_an_attempt_and_the_batch_is_dead_lettered_after_the_limit(
    redis_url: str, rdb: redis.Redis, caplog: pytest.LogCaptureFixture
):
    """Any exception (here a bug in the reply path) counts an attempt in Redis; a fresh run
    retries after a backoff; after BATCH_MAX_ATTEMPTS the batch is dead-lettered with
    stage "crash" and the conversation moves on. The bot is asked once in all."""
    bot = CountingEcho()
    first = dry_run_drainer(redis_url, rdb)
    first = dataclasses.replace(first, bot=bot, replier=BrokenReplier(rdb, "default"))
    rdb.rpush(keys.queue("default", CONV), raw(1, "poison", rdb=rdb))
    assert first.run() == "deferred" and 1.8 < deferred_by(rdb) <= 2.0  # backoff before the retry
    assert rdb.hget(keys.ledger("default", CONV), ERROR) == "RuntimeError: replier bug"
    assert successor(first, rdb).run() == "deferred" and 3.8 < deferred_by(rdb) <= 4.0
    with caplog.at_level(logging.ERROR):
        assert successor(first, rdb).run() == "released"
    letter = json.loads(rdb.lindex(keys.dead_letters("default"), 0))
    assert letter["stage"] == "crash" and letter["error"] == "RuntimeError: replier bug"
    assert letter["attempts"] == 3
    assert bot.calls == [[1]]  # the answer was stored once and never asked for again
    assert "stage=crash" in caplog.text
    rdb.rpush(keys.queue("default", CONV), raw(2, "next question", rdb=rdb))
    rdb.set(keys.lease("default", CONV), "T9", px=5000)
    mended = dataclasses.replace(first, task_id="T9", replier=DryRunOutbox(rdb, "default"))
    assert mended.run() == "released"
    assert outbox(rdb) == ["next question"]  # the conversation moved on


def test_a_batch_whose_runs_keep_dying_is_dead_lettered(redis_url: str, rdb: redis.Redis):
    """A batch that kills its worker (out of memory, a segfault in a library) raises
    nothing: every run that started it counted an attempt in the claim."""
    drainer = dry_run_drainer(redis_url, rdb)
    rdb.rpush(keys.processing("default", CONV), raw(1, "kills the worker", rdb=rdb))
    rdb.hset(keys.ledger("default", CONV), ATTEMPTS, 3)  # three runs claimed it and never came back
    assert drainer.run() == "released"
    letter = json.loads(rdb.lindex(keys.dead_letters("default"), 0))
    assert letter["stage"] == "crash" and "died while handling it, 3 times" in letter["error"]
    assert outbox(rdb) == []


def test_every_countdown_is_clamped_to_the_max_wait(redis_url: str, rdb: redis.Redis):
    """A due time an hour away (an arrival stamped by a clock far ahead) is never
    scheduled further than the max wait."""
    drainer = dry_run_drainer(redis_url, rdb)
    rdb.rpush(keys.queue("default", CONV), raw(1, "from the future", age=-3600, rdb=rdb))
    assert drainer.run() == "deferred"
    assert drainer.company.batch_max_wait_seconds == 5.0 and 4.8 < deferred_by(rdb) <= 5.0


def test_the_dead_letter_list_is_capped_and_says_what_it_dropped(
    redis_url: str, rdb: redis.Redis, caplog: pytest.LogCaptureFixture
):
    drainer = dry_run_drainer(redis_url, rdb, DEAD_LETTER_MAX="2")
    rdb.rpush(keys.queue("default", CONV), *[f"unreadable {i}" for i in range(4)])
    with caplog.at_level(logging.ERROR):
        assert drainer.run() == "released"
    kept = [json.loads(e)["messages"] for e in rdb.lrange(keys.dead_letters("default"), 0, -1)]
    assert kept == [["unreadable 2"], ["unreadable 3"]]  # the newest
    assert rdb.hget(keys.stats("default"), "dead_letters_dropped") == "2"
    assert "dead-letter list full" in caplog.text and "DEAD_LETTER_MAX=2" in caplog.text


@pytest.mark.parametrize(
    ("env", "days"),
    [({}, 30), ({"HANDOFF_MAX_DAYS": "2"}, 2)],
    ids=["default", "HANDOFF_MAX_DAYS"],
)
def test_a_human_takeover_marker_expires(redis_url: str, rdb: redis.Redis, env: dict[str, str], days: int):
    web = make_client(base_env(redis_url, "http://127.0.0.1:9", **env))
    assert post_webhook(web, cw.agent_reply("I will take it from here", 42)).status_code == 200
    ttl = rdb.ttl(keys.handoff("default", 42))
    assert days * 86400 - 5 <= ttl <= days * 86400


def test_a_bot_handoff_marker_expires(redis_url: str, rdb: redis.Redis):
    class HandsOff(EchoBot):
        def answer(self, request: dict[str, Any]) -> BotReply:
            return BotReply(("a human will call you",), handoff=True)

    drainer = dataclasses.replace(dry_run_drainer(redis_url, rdb), bot=HandsOff())
    rdb.rpush(keys.queue("default", CONV), raw(1, "a human please", rdb=rdb))
    assert drainer.run() == "released"
    assert 30 * 86400 - 5 <= rdb.ttl(keys.handoff("default", CONV)) <= 30 * 86400


class Killed(BaseException):
    """The worker dies here (SIGKILL): nothing of the run's own handling runs."""


class FailingBot:
    def __init__(self) -> None:
        self.calls = 0

    def answer(self, request: dict[str, Any]) -> BotReply:
        self.calls += 1
        raise BotError("bot answered 503")


def test_a_run_that_dies_after_posting_the_fallback_never_repeats_it(
    redis_url: str, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
):
    """Review finding 12: the bot failed and BOT_FALLBACK_MESSAGE went out; the worker dies
    before the batch is dead-lettered. The fallback is stored in the ledger in the answer's
    place, so the run that resumes the batch neither asks the bot again nor repeats the
    fallback: it only dead-letters the batch."""
    drainer = dry_run_drainer(redis_url, rdb, BOT_FALLBACK_MESSAGE="Sorry, an agent will answer soon.")
    bot = FailingBot()
    drainer = dataclasses.replace(drainer, bot=bot)
    rdb.rpush(keys.queue("default", CONV), raw(1, "are you open?", rdb=rdb))

    def dies(*args: Any, **kwargs: Any) -> None:
        raise Killed()

    monkeypatch.setattr(post, "dead_letter", dies)  # the step after the fallback's POST
    with pytest.raises(Killed):
        drainer.run()
    monkeypatch.undo()
    assert outbox(rdb) == ["Sorry, an agent will answer soon."] and bot.calls == 1
    resumed = successor(drainer, rdb)
    assert resumed.run() == "released"
    assert outbox(rdb) == ["Sorry, an agent will answer soon."] and bot.calls == 1
    (letter,) = [json.loads(e) for e in rdb.lrange(keys.dead_letters("default"), 0, -1)]
    assert letter["stage"] == "bot" and "503" in letter["error"]


def test_redis_blips_during_the_bot_calls_never_dead_letter_a_healthy_batch(redis_url: str, rdb: redis.Redis):
    """Review finding 2: three runs in a row lose their lease because their worker cannot
    reach Redis while the bot thinks (longer than the lease's proof lasts). None of that is
    the batch's fault: each run takes back the attempt its claim counted, and the fourth run
    answers the batch instead of dead-lettering it as a "crash"."""
    proxy = Proxy(urlparse(redis_url).port or 6379)
    env = {**base_env(proxy.url(), "http://127.0.0.1:9", LEASE_TTL_SECONDS="1"), "CHATWOOT_BASE_URL": ""}
    settings = load_settings(env)
    client = connect(proxy.url())  # the worker's client, through the proxy
    blips = [3]

    class BotDuringABlip:
        def answer(self, request: dict[str, Any]) -> BotReply:
            if blips[0]:
                blips[0] -= 1
                proxy.cut()  # Redis unreachable from this worker while the bot thinks
                time.sleep(1.3)
                proxy.restore()
            return BotReply(("Booked for 10:00.",))

    rdb.rpush(keys.queue("default", CONV), raw(1, "book me at 10", rdb=rdb))
    outcomes = []
    for run in range(4):
        task = f"task-{run}"
        rdb.set(keys.lease("default", CONV), task, px=1000)  # what CLAIM_DUE writes
        drainer = Drainer(
            client,
            Scripts(client),
            settings,
            settings.companies["default"],
            CONV,
            task,
            BotDuringABlip(),
            DryRunOutbox(rdb, "default"),
        )
        try:
            outcomes.append(str(drainer.run()))
        except redis.RedisError as exc:
            outcomes.append(type(exc).__name__)
        wait_for(lambda: not rdb.exists(keys.lease("default", CONV)), timeout=5)  # the sweeper's turn
    assert outcomes[3] == "released", outcomes
    assert outbox(rdb) == ["Booked for 10:00."]
    assert rdb.llen(keys.dead_letters("default")) == 0


def test_a_run_past_run_max_seconds_keeps_the_attempt_it_counted(redis_url: str, rdb: redis.Redis):
    """A run that overruns RUN_MAX_SECONDS (here: a Chatwoot that takes a second per reply)
    loses its lease by its own doing: its attempt stays counted, so a batch that hangs
    every run is still dead-lettered after BATCH_MAX_ATTEMPTS, never retried forever."""

    class SlowOutbox(DryRunOutbox):
        def create_message(
            self,
            account_id: int,
            conversation_id: str,
            content: str,
            *,
            choices=(),
            files=(),
            private=False,
            template=None,
        ) -> int | None:
            time.sleep(1.0)
            return super().create_message(account_id, conversation_id, content)

    drainer = dry_run_drainer(
        redis_url, rdb, LEASE_TTL_SECONDS="1", BOT_TIMEOUT_SECONDS="1", RUN_MAX_SECONDS="2.5"
    )
    four = type("FourReplies", (), {"answer": lambda self, request: BotReply(("a", "b", "c", "d"))})()
    drainer = dataclasses.replace(drainer, bot=four, replier=SlowOutbox(rdb, "default"))
    rdb.rpush(keys.queue("default", CONV), raw(1, "tell me everything", rdb=rdb))
    ctx = drainer.context()
    assert drain(ctx) == "lease-lost"
    ledger = rdb.hgetall(keys.ledger("default", CONV))
    assert ledger[ATTEMPTS] == "1" and f"run:{ctx.run_id}" in ledger


def check_config(redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**base_env(redis_url, "http://127.0.0.1:9"), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "app", "check-config"], cwd=ROOT, env=env, capture_output=True, text=True
    )


@pytest.mark.slow
def test_check_config_refuses_an_evicting_redis_naming_the_setting(tmp_path: Path):
    server = RedisServer(tmp_path, extra=("--maxmemory-policy", "allkeys-lru"))
    server.start()
    try:
        done = check_config(server.url)
    finally:
        server.stop()
    assert done.returncode == 2, done.stderr
    assert "maxmemory-policy is 'allkeys-lru'" in done.stderr and "noeviction" in done.stderr


@pytest.mark.slow
def test_check_config_warns_when_redis_keeps_nothing_on_disk(redis_url: str, redis_server):  # type: ignore[no-untyped-def]
    if redis_server is None:
        pytest.skip("the suite's own redis-server (no persistence) is not in use")
    done = check_config(redis_url)
    assert done.returncode == 0, done.stderr
    assert "persistence is off" in done.stderr


def test_check_config_says_what_each_persistence_setting_can_lose(tmp_path: Path):
    """Review finding 11: only an append-only file fsynced on every write keeps every message
    answered 202 and every reply record through a crash; snapshots alone, or an AOF fsynced
    every second or when the system likes, each get a warning saying what they lose."""
    server = RedisServer(tmp_path)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    seen = {}
    try:
        for name, settings in [
            ("nothing", {"appendonly": "no", "save": ""}),
            ("snapshots", {"appendonly": "no", "save": "3600 1 300 100 60 10000"}),
            ("everysec", {"save": "", "appendonly": "yes", "appendfsync": "everysec"}),
            ("os", {"appendonly": "yes", "appendfsync": "no"}),
            ("always", {"appendonly": "yes", "appendfsync": "always"}),
        ]:
            for key, value in settings.items():
                client.config_set(key, value)
            wait_for(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0)
            seen[name] = fitness(client)
    finally:
        server.stop()
    assert all(problems == [] for problems, _ in seen.values())
    assert "persistence is off" in seen["nothing"][1][0]
    assert (
        "only snapshots" in seen["snapshots"][1][0] and "since the last snapshot" in seen["snapshots"][1][0]
    )
    assert "'everysec'" in seen["everysec"][1][0] and "about 2 s" in seen["everysec"][1][0]
    assert "'no'" in seen["os"][1][0] and "answered 202" in seen["os"][1][0]
    assert seen["always"] == ([], [])


def test_a_posted_part_is_recorded_once_redis_answers_again_not_left_pending(tmp_path: Path):
    """Redis stops right after a part's POST: the record waits for it (no lease needed)
    instead of leaving the part pending, which a later run with an agent-bot token (it
    cannot read the conversation back) would post a second time."""
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        ledger = Ledger(client, Scripts(client), "default", CONV, "run#1")
        client.set(keys.lease("default", CONV), "run#1")
        pending = ledger.mark_pending("7-7", 0, 1000.0, "digest")
        server.stop()  # the POST happened; Redis is gone before its record
        restart = threading.Timer(1.5, server.start)
        restart.start()
        try:
            recorded = ledger.record_sent("7-7", 0, pending, 901)
        finally:
            restart.join()
        assert recorded is True
        assert client.hget(keys.ledger("default", CONV), "part:7-7:0") == "sent:901"
        assert client.exists(keys.own_reply("default", 901))
        server.stop()  # gone for longer than the patience: the error reaches the run
        with pytest.raises(redis.ConnectionError):
            ledger.record_sent("7-7", 1, "pending:1", 902, patience=0.5)
    finally:
        server.stop()
