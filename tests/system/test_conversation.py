"""Conversation behaviour through the real pipeline: handoff, agent takeover,
resume, pending-only, session expiry and reset, stale-reply suppression,
reply splitting, typing. One worker serves several companies, each configured
for the behaviour under test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import chatwoot_company, companies_env, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("conversation")
    # "plain", "resume" and "expiry" are account-webhook inboxes: conversations there are
    # open, and the bot answers them; "pending" is told explicitly to answer pending only.
    companies = [
        chatwoot_company("plain", stand, chatwoot_integration="webhook"),
        chatwoot_company("split", stand, reply_split="paragraphs", typing_chars_per_second=1000),
        chatwoot_company("pending", stand, bot_only_pending=True),
        chatwoot_company("resume", stand, bot_resume_after_minutes=0.05, chatwoot_integration="webhook"),
        chatwoot_company(
            "expiry",
            stand,
            chatwoot_integration="webhook",
            session_idle_minutes=0.05,
            session_expired_message="This chat has ended.",
            session_reset_keywords="#reset, start over",
        ),
        chatwoot_company("stale", stand, supersede_max=2),
        chatwoot_company("fallback", stand, bot_fallback_message="Sorry, one moment please."),
        chatwoot_company(
            "stale-ai", stand, bot_backend="openai", openai_base_url=f"{stand.url}/v1", openai_model="m"
        ),
    ]
    return companies_env(redis_url, folder, companies)


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    w = Worker(env, "conversation", housekeeping=True).start(redis.Redis.from_url(redis_url))
    yield w
    w.stop()


def send(web, cid: str, payload: dict[str, Any]):  # type: ignore[no-untyped-def]
    return post_webhook(web, payload, company=cid, secret=f"{cid}-secret")


def test_handoff_agent_takeover_own_replies_and_resume_on_pending(web, stand: Stand, rdb) -> None:
    assert send(web, "plain", cw.message("hello", 200)).status_code == 202
    wait_for(lambda: stand.replies(200) == ["hello"], timeout=10)
    # The gateway's own reply comes back as a "user" message (user token): not a takeover,
    # recognised by the id Chatwoot gave it ...
    by_id = cw.agent_reply("hello (as rendered by the channel)", 200)
    by_id["id"] = stand.calls("messages")[0]["id"]
    assert "own reply" in send(web, "plain", by_id).json["reason"]
    # ... or, when its webhook races the POST's answer, by its content.
    assert "own reply" in send(web, "plain", cw.agent_reply("hello", 200)).json["reason"]
    assert not rdb.exists(keys.handoff("plain", 200))
    # A human agent answers: the bot falls silent there.
    taken = send(web, "plain", cw.agent_reply("Hi, I am Ana, I'll help you", 200))
    assert "human agent" in taken.json["reason"]
    silenced = send(web, "plain", cw.message("are you a bot?", 200, status="open"))
    assert silenced.status_code == 200 and "human" in silenced.json["reason"]
    assert send(web, "plain", cw.status_changed(200, "pending")).status_code == 200
    assert send(web, "plain", cw.message("bot again?", 200)).status_code == 202
    wait_for(lambda: stand.replies(200) == ["hello", "bot again?"], timeout=10)


def test_resolved_then_reopened_by_the_contact_resumes_the_bot(web, stand: Stand, rdb) -> None:
    send(web, "plain", cw.agent_reply("Solved, bye!", 201))
    assert rdb.get(keys.handoff("plain", 201)) == "agent"
    send(web, "plain", cw.status_changed(201, "resolved"))
    assert send(web, "plain", cw.message("one more thing", 201, status="open")).status_code == 202
    wait_for(lambda: stand.replies(201) == ["one more thing"], timeout=10)


def test_bot_resumes_after_bot_resume_after_minutes(web, stand: Stand, rdb) -> None:
    send(web, "resume", cw.agent_reply("agent here", 202))
    assert send(web, "resume", cw.message("hello?", 202, status="open")).status_code == 200
    time.sleep(3.3)  # BOT_RESUME_AFTER_MINUTES = 0.05
    assert send(web, "resume", cw.message("anyone?", 202, status="open")).status_code == 202
    wait_for(lambda: stand.replies(202) == ["anyone?"], timeout=10)


def test_bot_only_pending(web, stand: Stand, rdb) -> None:
    ignored = send(web, "pending", cw.message("hi", 203, status="open"))
    assert ignored.status_code == 200 and "pending conversations only" in ignored.json["reason"]
    assert send(web, "pending", cw.message("hi again", 203, status="pending")).status_code == 202
    wait_for(lambda: stand.replies(203) == ["hi again"], timeout=10)


def test_session_expiry_clears_a_bot_handoff_and_says_so_once(web, stand: Stand, rdb) -> None:
    stand.bot_answer = lambda body: {"reply": "Passing you on", "handoff": True}
    send(web, "expiry", cw.message("human please", 204))
    send(web, "expiry", cw.agent_reply("Ana here", 205))  # 205: a human holds it
    send(web, "expiry", cw.message("hello", 205, status="open"))
    wait_for(lambda: rdb.get(keys.handoff("expiry", 204)) == "bot", timeout=10)
    wait_for(lambda: "This chat has ended." in stand.replies(204), timeout=15)  # idle 3 s
    time.sleep(2)
    assert stand.replies(204) == ["Passing you on", "This chat has ended."]  # once
    assert not rdb.exists(keys.handoff("expiry", 204))
    assert rdb.get(keys.handoff("expiry", 205)) == "agent" and stand.replies(205) == []  # the human keeps it
    stand.bot_answer = None
    assert send(web, "expiry", cw.message("new day", 204, status="open")).status_code == 202
    wait_for(lambda: stand.replies(204)[-1:] == ["new day"], timeout=10)


def test_the_models_kept_turns_hold_only_what_the_contact_received(web, stand: Stand, rdb) -> None:
    """Review finding 6 (openai backend): the contact adds a fragment while the model thinks
    about the first one. That first answer is thrown away (never posted), so it must not be
    in the model's context, nor the first fragment as a turn of its own: the kept turns are
    the one exchange the contact saw."""
    stand.while_completing = lambda: time.sleep(1.2)  # the model thinks...
    send(web, "stale-ai", cw.message("I want to book", 212))
    wait_for(lambda: stand.completions, timeout=10)
    send(web, "stale-ai", cw.message("a haircut tomorrow", 212))  # ...when a new fragment lands
    wait_for(lambda: stand.replies(212), timeout=15)
    wait_for(lambda: not rdb.exists(keys.processing("stale-ai", 212)), timeout=5)
    assert stand.replies(212) == ["you said: I want to book a haircut tomorrow"]
    second = stand.completions[1]["json"]["messages"]
    assert [m["role"] for m in second] == ["system", "user"]  # no answer the contact never saw
    kept = [json.loads(t) for t in rdb.lrange(keys.bot_history("stale-ai", 212), 0, -1)]
    assert [(t["role"], t["content"]) for t in kept] == [
        ("user", "I want to book a haircut tomorrow"),
        ("assistant", "you said: I want to book a haircut tomorrow"),
    ]


def test_the_gateways_own_fallback_and_session_notice_never_silence_the_bot(web, stand: Stand, rdb) -> None:
    """Review finding 1: with a user token Chatwoot sends every message the gateway posts back
    as an outgoing message from a "user" (what an agent's reply looks like). The fallback
    after a bot failure and the session-expired notice are the gateway's own, recognised by
    the id Chatwoot gave them or, racing the POST's answer, by their text: no takeover, and
    the bot answers the contact's next message."""
    stand.bot_answer = lambda body: (422, {"error": "model overloaded"})  # the bot fails
    assert send(web, "fallback", cw.message("hello?", 210)).status_code == 202
    wait_for(lambda: stand.replies(210) == ["Sorry, one moment please."], timeout=10)
    echo = cw.agent_reply("Sorry, one moment please.", 210)
    echo["id"] = stand.calls("messages")[0]["id"]
    assert "own reply" in send(web, "fallback", echo).json["reason"]
    assert (
        "own reply" in send(web, "fallback", cw.agent_reply("Sorry, one moment please.", 210)).json["reason"]
    )
    stand.bot_answer = None
    assert send(web, "fallback", cw.message("are you there?", 210)).status_code == 202
    wait_for(lambda: stand.replies(210) == ["Sorry, one moment please.", "are you there?"], timeout=10)
    assert not rdb.exists(keys.handoff("fallback", 210))

    send(web, "expiry", cw.message("good night", 211))
    wait_for(lambda: stand.replies(211) == ["good night", "This chat has ended."], timeout=15)  # idle 3 s
    notice = cw.agent_reply("This chat has ended.", 211)
    notice["id"] = stand.calls("messages")[-1]["id"]
    assert "own reply" in send(web, "expiry", notice).json["reason"]
    assert not rdb.exists(keys.handoff("expiry", 211))
    assert send(web, "expiry", cw.message("good morning", 211)).status_code == 202
    wait_for(lambda: stand.replies(211)[-1:] == ["good morning"], timeout=10)


def test_reset_keyword_clears_the_session_on_demand(web, stand: Stand, rdb) -> None:
    stand.bot_answer = lambda body: {"reply": "Passing you on", "handoff": True}
    send(web, "expiry", cw.message("human please", 206))
    wait_for(lambda: rdb.get(keys.handoff("expiry", 206)) == "bot", timeout=10)
    reset = send(web, "expiry", cw.message("  #RESET ", 206, status="open"))
    assert reset.status_code == 200 and reset.json["reason"] == "session reset"
    assert not rdb.exists(keys.handoff("expiry", 206))
    stand.bot_answer = None
    send(web, "expiry", cw.message("fresh start", 206))
    wait_for(lambda: stand.replies(206)[-1:] == ["fresh start"], timeout=10)


def test_stale_reply_is_suppressed_and_the_bot_answers_everything_once(web, stand: Stand, rdb) -> None:
    stand.bot_delay = 1.2
    send(web, "stale", cw.message("I want to book", 207))
    wait_for(lambda: stand.bot_calls, timeout=10)  # the bot is generating...
    send(web, "stale", cw.message("for Tuesday", 207))  # ...when a new fragment lands
    wait_for(lambda: stand.replies(207), timeout=15)
    time.sleep(1.5)
    assert stand.replies(207) == ["I want to book for Tuesday"]  # one coherent answer
    assert [c["text"] for c in stand.bot_calls] == ["I want to book", "I want to book for Tuesday"]
    assert rdb.hget(keys.stats("stale"), "superseded_runs") == "1"


def test_suppression_is_bounded_by_supersede_max(web, stand: Stand, rdb) -> None:
    stand.bot_delay = 0.8
    send(web, "stale", cw.message("a", 208))
    for calls, text in ((1, "b"), (2, "c"), (3, "d")):
        wait_for(lambda n=calls: len(stand.bot_calls) >= n, timeout=10)  # the bot is on its n-th run
        send(web, "stale", cw.message(text, 208))
    wait_for(lambda: len(stand.replies(208)) >= 2, timeout=20)
    time.sleep(1)
    # Two re-runs (a b, a b c), then the answer is posted; "d" gets its own answer.
    assert stand.replies(208) == ["a b c", "d"]
    assert rdb.hget(keys.stats("stale"), "superseded_runs") == "2"


def test_reply_split_into_paragraphs_in_order_with_typing_pauses(web, stand: Stand, rdb) -> None:
    stand.bot_answer = lambda body: {"reply": "Hi Maria!\n\nTuesday at 10 works.\n\nSee you then."}
    send(web, "split", cw.message("can I book?", 209))
    wait_for(lambda: len(stand.replies(209)) == 3, timeout=15)
    wait_for(lambda: len(stand.calls("toggle_typing_status")) == 3, timeout=5)  # "off" follows the last part
    assert stand.replies(209) == ["Hi Maria!", "Tuesday at 10 works.", "See you then."]
    posts = stand.calls("messages")
    assert posts[1]["at"] - posts[0]["at"] >= 1.0 and posts[2]["at"] - posts[1]["at"] >= 1.0
    order = [(r["path"].rsplit("/", 1)[1], r["json"].get("typing_status")) for r in stand.requests]
    assert order == [  # the bot answers at once: no indicator before the first part
        ("messages", None),
        ("toggle_typing_status", "on"),
        ("messages", None),
        ("toggle_typing_status", "on"),
        ("messages", None),
        ("toggle_typing_status", "off"),
    ]


def test_long_reply_is_split_under_the_whatsapp_limit(web, stand: Stand, rdb) -> None:
    stand.bot_answer = lambda body: {"reply": "This is a sentence of a long answer. " * 300}
    send(web, "plain", cw.message("tell me everything", 210))
    wait_for(lambda: len(stand.replies(210)) == 3, timeout=15)
    assert all(len(r) <= 4096 and r.endswith(".") for r in stand.replies(210))


def test_typing_goes_off_when_the_bot_fails(web, stand: Stand, rdb) -> None:
    stand.bot_answer = lambda body: (500, {"error": "down"})
    send(web, "plain", cw.message("hello?", 211))
    wait_for(lambda: rdb.llen(keys.dead_letters("plain")) >= 1, timeout=20)
    wait_for(lambda: len(stand.calls("toggle_typing_status")) == 2, timeout=5)
    assert [r["json"]["typing_status"] for r in stand.calls("toggle_typing_status")] == ["on", "off"]
