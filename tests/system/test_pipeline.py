"""End to end through a real redis-server, a real Celery worker and a local Chatwoot."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, idle, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow
WINDOW = 1.0


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return base_env(redis_url, stand.url, TEST_LOG_DIR=str(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    client = redis.Redis.from_url(redis_url)
    w = Worker(env, "pipeline", housekeeping=True).start(client)
    yield w
    w.stop()


def test_burst_of_three_fragments_gives_one_reply_in_order(web, stand: Stand, rdb) -> None:
    started = time.time()
    for text in ("hi", "good morning", "I want to book for Tuesday"):
        assert post_webhook(web, cw.message(text, 42)).status_code == 202
        time.sleep(0.3)
    wait_for(lambda: stand.replies(42), timeout=10)
    elapsed = time.time() - started
    time.sleep(WINDOW + 0.5)
    assert stand.replies(42) == ["hi good morning I want to book for Tuesday"]
    assert len(stand.bot_calls) == 1 and stand.bot_calls[0]["batched"] is True
    assert [m["content"] for m in stand.bot_calls[0]["messages"]] == [
        "hi",
        "good morning",
        "I want to book for Tuesday",
    ]
    assert elapsed >= 0.6 + WINDOW  # closed one window after the latest fragment
    wait_for(lambda: idle(rdb, 42))
    metrics = web.get("/metrics").get_data(as_text=True)
    assert 'gateway_batch_size_messages_bucket{company="default",le="2.0"} 0.0' in metrics
    assert 'gateway_batch_size_messages_bucket{company="default",le="3.0"} 1.0' in metrics
    assert 'gateway_bot_latency_seconds_count{company="default"} 1.0' in metrics
    assert 'gateway_replies_sent_total{company="default"} 1.0' in metrics
    gaps = {float(b): int(c) for b, c in rdb.hgetall(keys.gap_histogram("default")).items()}
    assert sum(gaps.values()) == 2 and all(
        b <= 1.0 for b in gaps
    )  # two gaps of ~0.3 s, recorded by the worker


def test_single_message_waits_the_window_once(web, stand: Stand, rdb) -> None:
    sent = time.time()
    assert post_webhook(web, cw.message("hello", 43)).status_code == 202
    wait_for(lambda: stand.replies(43), timeout=10)
    waited = stand.calls("messages")[0]["at"] - sent
    assert WINDOW <= waited < WINDOW + 1.5
    assert stand.replies(43) == ["hello"]


def test_fifo_across_40_rapid_messages(web, stand: Stand, rdb) -> None:
    # Long fragments are answered one by one, so the order of replies is visible.
    stand.bot_answer = lambda body: {"replies": [m["content"] for m in body["messages"]]}
    texts = [f"message number {i:02d} " + "x" * 450 for i in range(40)]
    for text in texts:
        assert post_webhook(web, cw.message(text, 44)).status_code == 202
    wait_for(lambda: len(stand.replies(44)) == 40, timeout=30)
    assert stand.replies(44) == texts


def test_50_concurrent_webhooks_on_one_conversation_each_answered_once(web, stand: Stand, rdb, env) -> None:
    stand.bot_answer = lambda body: {"replies": [m["content"] for m in body["messages"]]}
    payloads = [cw.message(f"part {i} " + "y" * 420, 45) for i in range(50)]
    statuses: list[int] = []

    def send(payload) -> None:  # type: ignore[no-untyped-def]
        # One app shared by all threads, as in a server process; a client per thread.
        statuses.append(post_webhook(web.application.test_client(), payload).status_code)

    threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(202) == 50
    wait_for(lambda: len(stand.replies(45)) >= 50, timeout=40)
    time.sleep(WINDOW)
    replies = stand.replies(45)
    assert sorted(replies) == sorted(p["content"] for p in payloads)
    assert len(replies) == len(set(replies)) == 50
    # Replies follow the order in which Redis accepted the messages.
    accepted = [m["content"] for m in stand.bot_calls for m in m["messages"]]
    assert replies == accepted
    assert stand.max_in_flight["45"] == 1


def test_duplicate_deliveries_give_one_reply(web, stand: Stand, rdb) -> None:
    payload = cw.message("only once please", 46)
    first = post_webhook(web, payload, **{"X-Chatwoot-Delivery": "d-1"})
    again = post_webhook(web, payload, **{"X-Chatwoot-Delivery": "d-1"})
    resent = post_webhook(web, payload, **{"X-Chatwoot-Delivery": "d-2"})
    assert first.status_code == 202
    assert again.status_code == 200 and again.json["reason"].startswith("duplicate")
    assert resent.status_code == 200 and resent.json["status"] == "ignored"
    wait_for(lambda: stand.replies(46), timeout=10)
    time.sleep(WINDOW + 0.5)
    assert stand.replies(46) == ["only once please"]


def test_follow_up_after_idle_gets_its_own_reply(web, stand: Stand, rdb) -> None:
    assert post_webhook(web, cw.message("first question", 47)).status_code == 202
    wait_for(lambda: stand.replies(47) and idle(rdb, 47), timeout=10)
    assert post_webhook(web, cw.message("second question", 47)).status_code == 202
    wait_for(lambda: len(stand.replies(47)) == 2, timeout=10)
    assert stand.replies(47) == ["first question", "second question"]
    wait_for(lambda: idle(rdb, 47))


def test_not_for_the_bot_is_never_answered(web, stand: Stand, rdb) -> None:
    for payload in (
        cw.agent_reply("agent here", 48),
        cw.private_note("note", 48),
        cw.bot_own_reply("bot", 48),
    ):
        response = post_webhook(web, payload)
        assert response.status_code == 200 and response.json["status"] == "ignored"
    time.sleep(WINDOW + 0.5)
    assert stand.replies(48) == [] and stand.bot_calls == []
    assert rdb.llen(keys.queue("default", 48)) == 0


def test_an_image_with_caption_joins_its_burst_in_order(web, stand: Stand, rdb) -> None:
    post_webhook(web, cw.message("look at this", 49))
    post_webhook(web, cw.image_with_caption("my rash", 49))
    post_webhook(web, cw.message("is it bad?", 49))
    wait_for(lambda: stand.replies(49), timeout=10)
    (call,) = stand.bot_calls  # one bot call for the burst, the image in its place
    assert call["text"] == "look at this my rash is it bad?" and call["batched"] is True
    assert [m["content"] for m in call["messages"]] == ["look at this", "my rash", "is it bad?"]
    assert call["messages"][1]["attachments"][0]["file_type"] == "image"
    assert call["messages"][1]["attachments"][0]["data_url"].endswith("photo.jpg")
    assert stand.replies(49) == ["look at this my rash is it bad?"]


def test_an_album_reaches_the_bot_as_one_call_with_every_image(web, stand: Stand, rdb) -> None:
    """A WhatsApp album: several images in a row, one with a caption."""
    for caption in ("", "the living room", ""):
        assert post_webhook(web, cw.image_with_caption(caption, 57)).status_code == 202
    wait_for(lambda: stand.replies(57), timeout=10)
    (call,) = stand.bot_calls
    assert [len(m["attachments"]) for m in call["messages"]] == [1, 1, 1]
    assert call["text"] == "the living room"


def test_typing_goes_on_before_the_reply_and_off_after(web, stand: Stand, rdb) -> None:
    stand.bot_delay = 1.0  # a bot that thinks: the indicator goes on after half a second
    post_webhook(web, cw.message("typing?", 50))
    wait_for(lambda: len(stand.calls("toggle_typing_status")) == 2, timeout=10)
    order = [(r["path"].rsplit("/", 1)[1], r["json"].get("typing_status")) for r in stand.requests]
    assert order == [("toggle_typing_status", "on"), ("messages", None), ("toggle_typing_status", "off")]
    on, message = stand.calls("toggle_typing_status")[0]["at"], stand.calls("messages")[0]["at"]
    assert message - on >= 0.4  # shown while the bot thought, not flashed just before the reply


def test_a_fast_answer_needs_no_typing_indicator(web, stand: Stand, rdb) -> None:
    post_webhook(web, cw.message("quick?", 53))
    wait_for(lambda: stand.replies(53), timeout=10)
    time.sleep(0.8)
    assert stand.replies(53) == ["quick?"] and stand.calls("toggle_typing_status") == []


def test_handoff_then_silence_then_resume_on_pending(web, stand: Stand, rdb) -> None:
    stand.bot_answer = lambda body: {"reply": "A human will help you", "handoff": True}
    post_webhook(web, cw.message("I want a human", 51))
    wait_for(lambda: stand.calls("toggle_status"), timeout=10)
    assert stand.calls("toggle_status")[0]["json"] == {"status": "open"}
    ignored = post_webhook(web, cw.message("hello?", 51, status="open"))
    assert ignored.status_code == 200 and "human" in ignored.json["reason"]
    assert post_webhook(web, cw.status_changed(51, "pending")).status_code == 200
    stand.bot_answer = None
    assert post_webhook(web, cw.message("back to the bot", 51)).status_code == 202
    wait_for(lambda: "back to the bot" in stand.replies(51), timeout=10)


def test_chatwoot_failure_is_retried_then_succeeds(web, stand: Stand, rdb) -> None:
    """A 429 is retried; a 500 on a create may have created the message, so it is posted
    again only after a read-back (a user token) found nothing."""
    stand.can_read = True
    stand.fail_next.extend([500, 429])
    post_webhook(web, cw.message("through errors", 52))
    wait_for(lambda: stand.replies(52), timeout=15)
    assert stand.replies(52) == ["through errors"]


def test_chatwoot_refusal_goes_to_dead_letters_and_conversation_moves_on(web, stand: Stand, rdb) -> None:
    stand.fail_next.append(422)
    post_webhook(web, cw.message("refused", 53))
    wait_for(lambda: rdb.llen(keys.dead_letters("default")) == 1, timeout=10)
    letter = rdb.lindex(keys.dead_letters("default"), 0)
    assert '"stage": "chatwoot"' in letter and "422" in letter
    post_webhook(web, cw.message("next one", 53))
    wait_for(lambda: stand.replies(53) == ["next one"], timeout=10)
    wait_for(lambda: idle(rdb, 53))


def test_dead_letters_are_listed_and_replayed_in_order_by_the_cli(web, stand: Stand, rdb, env) -> None:
    import subprocess
    import sys

    from tests.support import ROOT

    stand.fail_next.extend([422, 422])
    post_webhook(web, cw.message("first refused " + "q" * 420, 54))
    post_webhook(web, cw.message("second refused " + "q" * 420, 54))
    wait_for(lambda: rdb.llen(keys.dead_letters("default")) == 2, timeout=10)
    cli = [sys.executable, "-m", "app"]
    listed = subprocess.run(
        [*cli, "dead-letters"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert listed.stdout.count('"stage": "chatwoot"') == 2 and "q" * 50 not in listed.stdout
    asked = subprocess.run(  # no terminal, no --yes: nothing done
        [*cli, "replay-dead-letters"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert (
        asked.returncode == 2 and "pass --yes" in asked.stderr and rdb.llen(keys.dead_letters("default")) == 2
    )
    replayed = subprocess.run(
        [*cli, "replay-dead-letters", "--yes"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert "re-queued 2 message(s) of 2 dead letter(s)" in replayed.stdout
    assert rdb.llen(keys.dead_letters("default")) == 0
    wait_for(lambda: len(stand.replies(54)) == 2, timeout=15)  # the sweeper schedules the replay
    assert [r.split(" ")[0] for r in stand.replies(54)] == ["first", "second"]


def test_messages_waiting_behind_a_handoff_are_left_to_humans(web, stand: Stand, rdb) -> None:
    stand.bot_answer = lambda body: {"reply": "Passing you to a colleague", "handoff": True}
    # Long fragments: three segments in one batch; the first hands off.
    for text in ("I need a person " + "a" * 420, "it is urgent " + "b" * 420, "hello? " + "c" * 420):
        post_webhook(web, cw.message(text, 55))
    wait_for(lambda: stand.calls("toggle_status") and idle(rdb, 55), timeout=10)
    assert len(stand.bot_calls) == 1
    assert stand.replies(55) == ["Passing you to a colleague"]


def test_a_contact_who_never_pauses_is_answered_at_the_max_wait(web, stand: Stand, rdb) -> None:
    """Invariant 5: the batch closes BATCH_MAX_WAIT_SECONDS (5 s here) after its first
    fragment even though the 1 s quiet period never comes."""
    texts = [f"f{i:02d}" for i in range(12)]
    started = time.time()
    for text in texts:  # one fragment every 0.6 s for 6.6 s
        assert post_webhook(web, cw.message(text, 56)).status_code == 202
        time.sleep(0.6)
    first_reply_at = wait_for(
        lambda: stand.calls("messages") and stand.calls("messages")[0]["at"], timeout=10
    )
    assert 5.0 <= first_reply_at - started < 6.3  # not after the typing stopped (7.6 s)
    wait_for(lambda: " ".join(stand.replies(56)).split() == texts, timeout=10)  # the rest follows, in order
    assert len(stand.replies(56)) == 2
