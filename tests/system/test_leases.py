"""The lease under concurrency and crashes: real workers, real Redis, real kills."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from app.chatwoot.messages import StoredMessage
from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow
LEASE_TTL = 4.0


@pytest.fixture
def env(redis_url: str, stand: Stand, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    stand.reset()
    return base_env(
        redis_url,
        stand.url,
        TEST_LOG_DIR=str(tmp_path),
        BATCH_WINDOW_SECONDS="0.5",
        BATCH_MAX_WAIT_SECONDS="2",
        LEASE_TTL_SECONDS=str(LEASE_TTL),
    )


@pytest.fixture
def workers(env, redis_url: str, rdb) -> Iterator[list[Worker]]:  # type: ignore[no-untyped-def]
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def start(
    workers: list[Worker],
    env: dict[str, str],
    rdb: redis.Redis,
    name: str,
    housekeeping: bool = False,
    pool: str = "solo",
) -> Worker:
    threads = {"concurrency": 8, "prefetch": 4} if pool == "threads" else {}  # as start.sh runs one
    w = Worker(env, name, pool=pool, housekeeping=housekeeping, **threads).start(rdb)
    workers.append(w)
    return w


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_two_deployments_never_drain_one_conversation_at_once(env, workers, rdb, stand: Stand, pool) -> None:  # type: ignore[no-untyped-def]
    start(workers, env, rdb, "w1", pool=pool)
    start(workers, env, rdb, "w2", housekeeping=True, pool=pool)
    stand.bot_delay = 0.15
    stand.bot_answer = lambda body: {"replies": [m["content"] for m in body["messages"]]}
    webs = [make_client(env), make_client(env)]  # two deployments: two web apps, two workers
    conversations = range(60, 66)
    sent: dict[int, list[str]] = {c: [] for c in conversations}

    def talk(conv: int) -> None:
        for i in range(12):
            text = f"c{conv} m{i:02d} " + "z" * 420  # long: answered one by one, order visible
            assert post_webhook(webs[i % 2], cw.message(text, conv)).status_code == 202
            sent[conv].append(text)
            time.sleep(0.05 if i % 4 else 0.6)  # bursts separated by pauses: many drain tasks

    done = threading.Event()
    celery = Celery(broker=env["REDIS_URL"], backend=env["REDIS_URL"])

    def redeliver() -> None:
        # Stray drain tasks (redeliveries, the other deployment's sweeper): each must
        # exit at once, or take only a free lease.
        while not done.is_set():
            for conv in conversations:
                celery.send_task("gateway.drain", args=["default", str(conv)], task_id=str(uuid.uuid4()))
            time.sleep(0.1)

    threads = [threading.Thread(target=talk, args=(c,)) for c in conversations]
    threads.append(threading.Thread(target=redeliver))
    for t in threads:
        t.start()
    for t in threads[:-1]:
        t.join()
    wait_for(lambda: all(len(stand.replies(c)) >= 12 for c in conversations), timeout=60)
    done.set()
    threads[-1].join()
    time.sleep(1)
    for conv in conversations:
        assert stand.replies(conv) == sent[conv]  # exactly once, in order
        assert stand.max_in_flight[str(conv)] == 1  # never two drainers at once
    assert all("outcome=" in w.log() for w in workers), "both workers must have drained"


def test_a_bot_call_longer_than_the_lease_keeps_it_alive(env, workers, rdb, stand: Stand) -> None:
    """The heartbeat: a live drainer's lease is renewed while the bot thinks, so neither the
    sweeper (housekeeping runs here) nor a second worker starts a second drainer of the conversation."""
    stand.bot_delay = LEASE_TTL * 2.5
    env = {**env, "BOT_TIMEOUT_SECONDS": str(stand.bot_delay * 2)}  # the whole call fits its deadline
    start(workers, env, rdb, "thinker", housekeeping=True)
    start(workers, env, rdb, "idle")
    web = make_client(env)
    post_webhook(web, cw.message("take your time", 71))
    wait_for(lambda: stand.replies(71), timeout=LEASE_TTL * 2.5 + 15)
    time.sleep(1.5)
    assert stand.replies(71) == ["take your time"]
    assert len(stand.bot_calls) == 1 and stand.max_in_flight["71"] == 1
    assert int(rdb.hget(keys.stats("default"), "sweeper_rescues") or 0) == 0


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_lease_of_a_killed_worker_is_taken_over_and_nothing_lost(
    env, workers, rdb, stand: Stand, pool
) -> None:  # type: ignore[no-untyped-def]
    victim = start(workers, env, rdb, "victim", pool=pool)
    stand.bot_delay = 2.0
    web = make_client(env)
    post_webhook(web, cw.message("are you there", 70))
    wait_for(lambda: stand.bot_calls, timeout=10)  # the bot call is in flight
    victim.kill()
    assert rdb.llen(keys.processing("default", 70)) == 1  # the claimed batch survives the crash
    killed_at = time.time()
    stand.bot_delay = 0.0
    start(workers, env, rdb, "rescuer", housekeeping=True, pool=pool)
    wait_for(lambda: stand.replies(70), timeout=20)
    recovered_in = time.time() - killed_at
    time.sleep(1)
    assert stand.replies(70) == ["are you there"]
    assert recovered_in < LEASE_TTL + 8  # lease TTL + a sweep, not the broker's 1 h visibility timeout
    assert int(rdb.hget(keys.stats("default"), "sweeper_rescues") or 0) >= 1
    wait_for(lambda: not rdb.exists(keys.processing("default", 70)))


def test_lease_naming_a_task_the_backend_never_heard_of_expires_and_is_rescued(
    env, workers, rdb, stand: Stand
) -> None:
    start(workers, env, rdb, "w", housekeeping=True)
    ghost = str(uuid.uuid4())
    rdb.set(keys.lease("default", 71), ghost, px=3000)
    web = make_client(env)
    response = post_webhook(web, cw.message("hello ghost", 71))
    assert response.status_code == 202 and response.json["lease_holder"] == ghost
    celery = Celery(broker=env["REDIS_URL"], backend=env["REDIS_URL"])
    assert celery.AsyncResult(ghost).state == "PENDING"  # unknown reads PENDING: no proof of life
    wait_for(lambda: stand.replies(71), timeout=15)
    assert stand.replies(71) == ["hello ghost"]


def test_finished_holder_is_taken_over_at_once_by_the_dispatcher(env, workers, rdb, stand: Stand) -> None:
    """A lease whose holder has finished without releasing it (its result says SUCCESS):
    the dispatcher finds the batch due, the holder late, and takes over at once — not
    after the lease runs out."""
    start(workers, env, rdb, "w")  # no housekeeping: not the sweeper's doing
    finished = str(uuid.uuid4())
    celery = Celery(broker=env["REDIS_URL"], backend=env["REDIS_URL"])
    celery.backend.store_result(finished, "released", "SUCCESS")
    rdb.set(keys.lease("default", 72), finished, px=60_000)
    response = post_webhook(make_client(env), cw.message("take over", 72))
    assert response.status_code == 202 and response.json["lease_holder"] == finished
    rdb.pexpire(keys.lease("default", 72), int(LEASE_TTL * 1000 / 4))  # overdue now
    wait_for(lambda: stand.replies(72), timeout=LEASE_TTL)  # before the lease would have run out
    assert rdb.hget(keys.stats("default"), "lease_takeovers") == "1"


def test_sweeper_rescues_a_queue_with_no_lease(env, workers, rdb, stand: Stand) -> None:
    start(workers, env, rdb, "w", housekeeping=True)
    message = StoredMessage(
        id=5001, conversation_id="73", account_id=1, content="stranded", received_at=time.time()
    )
    rdb.rpush(keys.queue("default", 73), message.to_json())
    rdb.sadd(keys.conversation_index("default"), "73")
    wait_for(lambda: stand.replies(73), timeout=15)
    assert stand.replies(73) == ["stranded"]
    wait_for(lambda: not rdb.sismember(keys.conversation_index("default"), "73"))


def test_poison_entry_is_dead_lettered_and_the_conversation_continues(
    env, workers, rdb, stand: Stand
) -> None:
    start(workers, env, rdb, "w", housekeeping=True)
    rdb.rpush(keys.queue("default", 74), "{not json")
    rdb.sadd(keys.conversation_index("default"), "74")
    post_webhook(make_client(env), cw.message("after the poison", 74))
    wait_for(lambda: stand.replies(74), timeout=15)
    assert stand.replies(74) == ["after the poison"]
    letter = rdb.lindex(keys.dead_letters("default"), 0)
    assert letter and '"stage": "parse"' in letter


def test_a_run_whose_lease_was_taken_during_the_bot_call_writes_and_posts_nothing(
    env, workers, rdb, stand: Stand
) -> None:
    """Invariant 2 at the scripts' own check: the lease goes to another run while the bot
    thinks, between two renewals (so the run's proof of its lease is still fresh): the
    answer is not stored, nothing is posted, the batch stays in processing for the holder."""
    stand.bot_delay = 3.0
    env = {**env, "LEASE_TTL_SECONDS": "20"}  # renewed every 5 s: the take-over lands between two
    worker = start(workers, env, rdb, "stale")
    web = make_client(env)
    post_webhook(web, cw.message("who answers me?", 74))
    wait_for(lambda: any(str(c["conversation_id"]) == "74" for c in stand.bot_calls), timeout=10)
    time.sleep(1.0)
    rdb.set(keys.lease("default", 74), "intruder#1", px=60_000)  # another run holds it now
    time.sleep(stand.bot_delay + 2.0)
    assert stand.replies(74) == []
    assert [
        StoredMessage.from_json(m).content for m in rdb.lrange(keys.processing("default", 74), 0, -1)
    ] == ["who answers me?"]
    assert not rdb.exists(keys.ledger("default", 74)) or not any(
        f.startswith("answer:") for f in rdb.hkeys(keys.ledger("default", 74))
    )
    assert rdb.get(keys.lease("default", 74)) == "intruder#1"
    assert "lease lost" in worker.log()
