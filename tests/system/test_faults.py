"""Fault suite: real SIGKILL/SIGTERM of real workers, a real Redis outage.

Each test counts messages sent, acknowledged (202), answered, lost, duplicated
and reordered; with FAULT_REPORT=<file> set, a JSON line per test is appended
there (docs/reliability.md quotes a run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import fault_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow
LEASE_TTL = 2.0  # fault_env's


def tally(sent: dict[int, list[str]], stand: Stand, acknowledged: int, **extra: object) -> dict[str, object]:
    """Lost, duplicated and reordered replies, per conversation, summed."""
    lost = duplicated = reordered = 0
    for conv, texts in sent.items():
        replies = stand.replies(conv)
        duplicated += len(replies) - len(set(replies))
        first_seen = list(dict.fromkeys(replies))
        lost += len(set(texts) - set(replies))
        reordered += int([t for t in first_seen if t in texts] != [t for t in texts if t in first_seen])
    figures = {
        "sent": sum(len(t) for t in sent.values()),
        "acknowledged": acknowledged,
        "answered": sum(len(set(stand.replies(c))) for c in sent),
        "lost": lost,
        "duplicated": duplicated,
        "reordered_conversations": reordered,
        **extra,
    }
    if os.environ.get("FAULT_REPORT"):
        with open(os.environ["FAULT_REPORT"], "a") as out:
            out.write(json.dumps(figures) + "\n")
    return figures


@pytest.fixture
def stand_reset(stand: Stand, rdb) -> Stand:  # type: ignore[no-untyped-def]
    stand.reset()
    stand.bot_answer = lambda body: {"replies": [m["content"] for m in body["messages"]]}
    return stand


def long_text(conv: int, i: int) -> str:
    return f"c{conv} m{i:02d} " + "w" * 420  # long: answered one by one, order visible


def test_kill_during_the_window_is_recovered_by_the_sweeper(
    redis_url, rdb, stand_reset: Stand, workers, tmp_path
):
    env = fault_env(redis_url, stand_reset, tmp_path, BATCH_WINDOW_SECONDS="1.5", BATCH_MAX_WAIT_SECONDS="3")
    victim = Worker(env, "victim", housekeeping=True).start(rdb)
    workers.append(victim)
    web = make_client(env)
    assert post_webhook(web, cw.message("before the claim", 100)).status_code == 202
    time.sleep(0.3)  # the countdown task sits unacknowledged in the victim's memory
    victim.kill()
    killed = time.time()
    workers.append(Worker(env, "heir", housekeeping=True).start(rdb))
    wait_for(lambda: stand_reset.replies(100), timeout=20)
    recovery = time.time() - killed
    time.sleep(1)
    figures = tally(
        {100: ["before the claim"]},
        stand_reset,
        1,
        fault="SIGKILL before claim",
        recovery_seconds=round(recovery, 1),
    )
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert recovery < 1.5 + LEASE_TTL + 6  # not the broker's one-hour visibility timeout


def crash_inside_the_first_reply_post(
    env: dict[str, str], rdb: redis.Redis, stand: Stand, workers: list[Worker], conv: int
) -> list[str]:
    """Kill the worker once Chatwoot has created the first reply, before it answers;
    start another worker; return the texts, all answered by then."""
    victim = Worker(env, "victim", housekeeping=True).start(rdb)
    workers.append(victim)
    fired = threading.Event()

    def crash() -> None:  # Chatwoot has created the message; the worker dies before hearing so
        if not fired.is_set():
            fired.set()
            victim.kill()

    stand.on_message_created = crash
    web = make_client(env)
    texts = [long_text(conv, i) for i in range(3)]
    for text in texts:
        post_webhook(web, cw.message(text, conv))
    wait_for(fired.is_set, timeout=10)
    assert rdb.llen(keys.processing("default", conv)) == 3  # the batch is still in processing
    workers.append(Worker(env, "heir", housekeeping=True).start(rdb))
    wait_for(lambda: set(stand.replies(conv)) == set(texts), timeout=20)
    time.sleep(1)
    return texts


def test_kill_after_chatwoot_created_the_reply_repeats_it_at_most_once(
    redis_url, rdb, stand_reset: Stand, workers, tmp_path
):
    env = fault_env(redis_url, stand_reset, tmp_path)
    texts = crash_inside_the_first_reply_post(env, rdb, stand_reset, workers, 101)
    figures = tally({101: texts}, stand_reset, 3, fault="SIGKILL between reply POST and its record", kills=1)
    assert figures["lost"] == 0 and figures["reordered_conversations"] == 0
    assert figures["duplicated"] <= 1  # the crash window: one POST, never more


def test_sigterm_lets_the_running_batch_finish(redis_url, rdb, stand_reset: Stand, workers, tmp_path):
    env = fault_env(redis_url, stand_reset, tmp_path)
    worker = Worker(env, "draining", housekeeping=True).start(rdb)
    workers.append(worker)
    stand_reset.bot_delay = 1.5
    web = make_client(env)
    post_webhook(web, cw.message("in flight at SIGTERM", 102))
    wait_for(lambda: stand_reset.bot_calls, timeout=10)
    assert worker.proc is not None
    stopped_at = time.time()
    worker.proc.send_signal(signal.SIGTERM)
    post_webhook(web, cw.message("arrives during shutdown", 103))
    assert worker.proc.wait(timeout=15) == 0
    shutdown = time.time() - stopped_at
    assert stand_reset.replies(102) == ["in flight at SIGTERM"]  # finished, not abandoned
    stand_reset.bot_delay = 0
    workers.append(Worker(env, "next", housekeeping=True).start(rdb))
    wait_for(lambda: stand_reset.replies(103), timeout=20)
    figures = tally(
        {102: ["in flight at SIGTERM"], 103: ["arrives during shutdown"]},
        stand_reset,
        2,
        fault="SIGTERM during a bot call",
        shutdown_seconds=round(shutdown, 1),
    )
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert shutdown < 3 + 1.5  # fits a draining time of a few seconds


def test_random_worker_kills_under_traffic_lose_and_reorder_nothing(
    redis_url, rdb, stand_reset: Stand, workers, tmp_path
):
    env = fault_env(redis_url, stand_reset, tmp_path)
    stand_reset.bot_delay = 0.08
    rng = random.Random(20261124)
    conversations = list(range(110, 118))
    sent: dict[int, list[str]] = {c: [] for c in conversations}
    acknowledged = 0
    web = make_client(env)
    current = Worker(env, "chaos-0", housekeeping=True).start(rdb)
    workers.append(current)
    done = threading.Event()

    def traffic() -> None:
        nonlocal acknowledged
        order = [c for c in conversations for _ in range(10)]
        rng.shuffle(order)
        for conv in order:
            text = long_text(conv, len(sent[conv]))
            sent[conv].append(text)
            if post_webhook(web, cw.message(text, conv)).status_code == 202:
                acknowledged += 1
            time.sleep(rng.uniform(0, 0.12))
        done.set()

    sender = threading.Thread(target=traffic)
    sender.start()
    kills = 0
    while not done.is_set() or kills < 4:
        time.sleep(rng.uniform(0.4, 1.6))
        current.kill()
        kills += 1
        current = Worker(env, f"chaos-{kills}", housekeeping=True).start(rdb)
        workers.append(current)
        if kills >= 8:
            break
    sender.join()
    wait_for(lambda: all(set(stand_reset.replies(c)) >= set(sent[c]) for c in conversations), timeout=90)
    time.sleep(1.5)
    figures = tally(sent, stand_reset, acknowledged, fault="random SIGKILL under traffic", kills=kills)
    assert acknowledged == figures["sent"]
    assert figures["lost"] == 0 and figures["reordered_conversations"] == 0
    assert figures["duplicated"] <= kills


def test_chatwoot_read_timeout_is_never_re_posted_and_is_dead_lettered_as_ambiguous(
    redis_url, rdb, stand_reset: Stand, workers, tmp_path
):
    env = fault_env(redis_url, stand_reset, tmp_path, CHATWOOT_TIMEOUT_SECONDS="0.5")
    workers.append(Worker(env, "timeouts", housekeeping=True).start(rdb))
    stand_reset.message_delay = 1.5  # Chatwoot creates the message but answers too late
    web = make_client(env)
    post_webhook(web, cw.message("slow chatwoot", 120))
    wait_for(lambda: rdb.llen(keys.dead_letters("default")) == 1, timeout=15)
    letter = json.loads(rdb.lindex(keys.dead_letters("default"), 0))
    assert letter["stage"] == "chatwoot" and letter["ambiguous"] is True
    stand_reset.message_delay = 0
    post_webhook(web, cw.message("next question", 120))
    wait_for(lambda: "next question" in stand_reset.replies(120), timeout=15)
    assert stand_reset.replies(120) == ["slow chatwoot", "next question"]  # the first POST was not repeated


def test_a_slow_bot_blocks_no_other_conversation_beyond_the_pool_size(
    redis_url, rdb, stand_reset: Stand, workers, tmp_path
):
    env = fault_env(redis_url, stand_reset, tmp_path)
    # prefetch 4, as start.sh runs a threads pool: with 1, a freed slot waits for the broker's poll
    workers.append(
        Worker(env, "threads", pool="threads", concurrency=4, prefetch=4, housekeeping=True).start(rdb)
    )
    slow = {"130", "131"}
    stand_reset.bot_answer = lambda body: (
        time.sleep(4) if body["conversation_id"] in slow else None,
        {"reply": body["text"]},
    )[1]
    web = make_client(env)
    for conv in (130, 131):
        post_webhook(web, cw.message(f"slow {conv}", conv))
    time.sleep(0.2)
    started = time.time()
    answer_times = []
    for conv in range(132, 138):
        sent = time.perf_counter()
        assert post_webhook(web, cw.message(f"fast {conv}", conv)).status_code == 202
        answer_times.append(time.perf_counter() - sent)
    # Invariant 8: the webhook never waits on the bot (two 4 s bot calls are in flight).
    assert max(answer_times) < 0.5
    wait_for(lambda: all(stand_reset.replies(c) for c in range(132, 138)), timeout=15)
    fast_done = time.time() - started
    assert not stand_reset.replies(130) and not stand_reset.replies(131)  # still at the bot
    assert fast_done < 3  # two busy threads, two free: nobody waited for the slow bot
    wait_for(lambda: stand_reset.replies(130) and stand_reset.replies(131), timeout=15)


def test_with_a_user_token_a_crash_inside_the_reply_post_repeats_nothing(
    redis_url, rdb, stand_reset: Stand, workers, tmp_path
):
    env = fault_env(redis_url, stand_reset, tmp_path)
    stand_reset.can_read = True  # a user access token: the gateway can read the conversation back
    texts = crash_inside_the_first_reply_post(env, rdb, stand_reset, workers, 121)
    figures = tally({121: texts}, stand_reset, 3, fault="SIGKILL inside the reply POST, user token", kills=1)
    assert figures["lost"] == 0 and figures["reordered_conversations"] == 0
    assert figures["duplicated"] == 0  # the pending part was read back, not posted again
    assert rdb.hget(keys.stats("default"), "replies_recovered") == "1"


def test_with_a_user_token_an_ambiguous_timeout_is_settled_by_read_back(
    redis_url, rdb, stand_reset: Stand, workers, tmp_path
):
    env = fault_env(redis_url, stand_reset, tmp_path, CHATWOOT_TIMEOUT_SECONDS="0.5")
    stand_reset.can_read = True
    workers.append(Worker(env, "timeouts", housekeeping=True).start(rdb))
    stand_reset.message_delay = 1.0  # created, but answered after the gateway gave up waiting
    web = make_client(env)
    post_webhook(web, cw.message("slow but readable", 122))
    wait_for(lambda: stand_reset.replies(122) and not _busy(rdb, 122), timeout=15)
    time.sleep(0.5)
    assert stand_reset.replies(122) == ["slow but readable"]  # found by read-back: not posted twice
    assert rdb.llen(keys.dead_letters("default")) == 0


def _busy(rdb, conv: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(
        rdb.exists(keys.queue("default", conv), keys.processing("default", conv), keys.lease("default", conv))
    )


def test_the_housekeeping_keeps_its_schedule_while_every_slot_waits_on_a_slow_bot(
    redis_url, rdb, stand_reset: Stand, workers, tmp_path
):
    """Invariant 13: both slots of a threads pool wait on a slow bot, and a conversation is
    stranded meanwhile (its worker died). The sweeper still rescues it within its interval,
    and the gauges are summed on time: they run on the worker's own threads, not in the pool."""
    env = fault_env(
        redis_url, stand_reset, tmp_path, SWEEP_INTERVAL_SECONDS="0.5", GAUGES_INTERVAL_SECONDS="1"
    )
    busy = Worker(env, "busy", pool="threads", concurrency=2, prefetch=4, housekeeping=True)
    workers.append(busy.start(rdb))
    stand_reset.bot_delay = 6.0
    web = make_client(env)
    for conv in (140, 141):
        post_webhook(web, cw.message(f"slow {conv}", conv))
    wait_for(lambda: len(stand_reset.bot_calls) == 2, timeout=10)  # every slot on a bot call
    stranded = cw.message("stranded", 142)
    rdb.rpush(keys.queue("default", 142), json.dumps({**_stored(stranded), "received_at": time.time()}))
    rdb.sadd(keys.conversation_index("default"), "142")
    summed_before = float(rdb.hget(keys.gauges("default"), "at") or 0)
    wait_for(lambda: rdb.zscore(keys.due("default"), "142") is not None, timeout=2)  # rescued on time
    wait_for(lambda: float(rdb.hget(keys.gauges("default"), "at") or 0) > summed_before, timeout=2)
    assert sum(stand_reset.in_flight.values()) == 2  # ... while both bot calls still run
    assert rdb.hget(keys.stats("default"), "sweeper_rescues") == "1"
    wait_for(lambda: stand_reset.replies(142) == ["stranded"], timeout=15)


def _stored(payload: dict) -> dict:
    from app.chatwoot.payload import parse_webhook

    return json.loads(parse_webhook(payload, 0.0).to_json())  # type: ignore[union-attr]
