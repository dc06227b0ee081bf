"""Whole conversations as Chatwoot really plays them (tests/chatwoot_payloads.py),
replayed through the real pipeline: the web app, a real worker, real Redis, the
local Chatwoot stand-in answering as the bot. docs/conversation.md draws the
state machine these timelines walk through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests import chatwoot_payloads as cw
from tests.conftest import chatwoot_company, companies_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow
QUIET = 1.2  # seconds to be sure the bot stays silent (window 0.3 s, a fast worker)


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    companies = [
        chatwoot_company("bot", stand),  # an Agent Bot inbox (the default integration)
        chatwoot_company("hooks", stand, chatwoot_integration="webhook"),  # an account webhook
        chatwoot_company("scoped", stand, inbox_ids=[4]),  # one WhatsApp inbox of an account with more
        # one burst posted in a row must be one batch even on a loaded machine: 2 s, not 0.3 s
        chatwoot_company("burst", stand, batch_window_seconds=2, batch_max_wait_seconds=4),
        chatwoot_company(
            "llm",
            stand,
            bot_backend="openai",
            openai_base_url=f"{stand.url}/v1",
            openai_model="test-model",
            batch_window_seconds=2,
            batch_max_wait_seconds=4,
        ),
    ]
    return companies_env(redis_url, tmp_path_factory.mktemp("timelines"), companies)


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    w = Worker(env, "timelines", housekeeping=True).start(redis.Redis.from_url(redis_url))
    yield w
    w.stop()


Step = tuple[Any, ...]

TIMELINES: dict[str, tuple[str, int, list[Step]]] = {
    "agent takes over a pending conversation, resolves it, the contact comes back": (
        "bot",
        500,
        [
            ("send", cw.message("hi, I want to book", 500), 202),
            ("answered", 1),
            ("send", cw.agent_reply("Hello, Ana here, I will handle your booking", 500), "human agent"),
            ("send", cw.conversation_updated(500, "pending"), 200),  # pending, unchanged: still Ana's
            ("send", cw.message("thanks Ana, Tuesday works", 500), "handed to a human"),
            ("quiet", 1),
            ("send", cw.status_changed(500, "resolved", previous="pending"), "the bot answers it again"),
            ("send", cw.status_changed(500, "pending", previous="resolved"), 200),  # the contact reopens it
            ("send", cw.message("one more question", 500), 202),
            ("answered", 2),
        ],
    ),
    "an agent answers from the WhatsApp Business phone": (
        "bot",
        501,
        [
            ("send", cw.message("is the clinic open today?", 501), 202),
            ("answered", 1),
            ("send", cw.phone_echo("Yes! Ana here, from the clinic phone", 501), "from the WhatsApp phone"),
            ("send", cw.conversation_updated(501, "pending"), 200),
            ("send", cw.message("great, see you at 3", 501), "handed to a human"),
            ("quiet", 1),
            ("send", cw.status_changed(501, "pending", previous="open"), "the bot answers it again"),
            ("send", cw.message("can the bot book me?", 501), 202),
            ("answered", 2),
        ],
    ),
    "the bot's own replies, private notes and automation messages are no takeover": (
        "bot",
        502,
        [
            ("send", cw.message("hello", 502), 202),
            ("answered", 1),
            ("send", cw.bot_own_reply("hello", 502), "outgoing"),
            ("send", cw.private_note("check her file first", 502), "outgoing"),
            ("send", cw.automation_message("We answer within the hour", 502), "automation"),
            ("send", cw.message("are you still there?", 502), 202),
            ("answered", 2),
        ],
    ),
    "in an Agent Bot inbox, open conversations belong to humans": (
        "bot",
        503,
        [
            ("send", cw.message("hello?", 503, status="open"), "pending conversations only"),
            ("quiet", 0),
        ],
    ),
    "an account webhook: the agent resolves, the contact reopens it open": (
        "hooks",
        504,
        [
            ("send", cw.message("hi", 504, status="open"), 202),
            ("answered", 1),
            ("send", cw.agent_reply("Solved, bye!", 504, status="open"), "human agent"),
            ("send", cw.message("ok thanks", 504, status="open"), "handed to a human"),
            ("send", cw.status_changed(504, "resolved"), "the bot answers it again"),
            ("send", cw.message("one more thing", 504, status="open"), 202),
            ("answered", 2),
        ],
    ),
    "INBOX_IDS: another inbox of the account is not the bot's": (
        "scoped",
        505,
        [
            ("send", cw.message("from the web widget", 505, inbox_id=9), "INBOX_IDS"),
            ("quiet", 0),
            ("send", cw.message("from WhatsApp", 505, inbox_id=4), 202),
            ("answered", 1),
        ],
    ),
}


@pytest.mark.parametrize("name", list(TIMELINES))
def test_timeline(name: str, env, worker, rdb, stand: Stand) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    cid, conversation, steps = TIMELINES[name]
    web = make_client(env)
    for step in steps:
        kind, *args = step
        if kind == "send":
            payload, expected = args
            answer = post_webhook(web, payload, company=cid, secret=f"{cid}-secret")
            if isinstance(expected, int):
                assert answer.status_code == expected, answer.json
            else:
                assert expected in answer.json.get("reason", ""), answer.json
        elif kind == "answered":
            wait_for(lambda n=args[0]: len(stand.replies(conversation)) >= n, timeout=10)
            assert len(stand.replies(conversation)) == args[0]
        else:  # quiet: the bot stays silent
            time.sleep(QUIET)
            assert len(stand.replies(conversation)) == args[0], stand.replies(conversation)


def test_locations_contact_cards_and_voice_notes_reach_the_bot_with_what_they_carry(
    env, worker, rdb, stand: Stand
) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    stand.bot_answer = lambda body: {"reply": f"noted {len(body['messages'])} message(s)"}
    web = make_client(env)
    for payload in (
        cw.message("where is the clinic?", 506),
        cw.location("Clinic, Rua Augusta 10", -23.55, -46.65, 506),
        cw.contact_card("Joao", "Lima", "+55 11 98888-7777", 506),
        cw.audio("and please call my husband", 506),
    ):
        assert post_webhook(web, payload, company="burst", secret="burst-secret").status_code == 202
    wait_for(lambda: stand.replies(506), timeout=15)
    time.sleep(0.5)
    with stand.lock:
        calls = [c for c in stand.bot_calls if c["conversation_id"] == "506"]
    assert len(calls) == 1 and stand.replies(506) == ["noted 4 message(s)"]  # one burst, one call
    assert calls[0]["text"] == " ".join(  # short on average: joined as one sentence
        [
            "where is the clinic?",
            "[location: Clinic, Rua Augusta 10 (-23.55, -46.65)]",
            "[contact card: Joao Lima +55 11 98888-7777]",
            "[voice note: and please call my husband]",
        ]
    )
    attachments = [a for c in calls for m in c["messages"] for a in m["attachments"]]
    assert [a["file_type"] for a in attachments] == ["location", "contact", "audio"]  # in message order
    assert attachments[0]["coordinates_lat"] == -23.55 and attachments[0]["fallback_title"].startswith(
        "Clinic"
    )
    assert attachments[1] == {
        "file_type": "contact",
        "fallback_title": "+55 11 98888-7777",
        "meta": {"firstName": "Joao", "lastName": "Lima"},
    }
    assert attachments[2]["transcribed_text"] == "and please call my husband"
    assert all(isinstance(m["created_at"], int) for c in calls for m in c["messages"])  # from the ISO string


def test_the_openai_backend_reads_what_attachments_carry_as_text(env, worker, rdb, stand: Stand) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    web = make_client(env)
    for payload in (
        cw.location("Clinic, Rua Augusta 10", -23.55, -46.65, 507),
        cw.contact_card("Joao", "Lima", "+55 11 98888-7777", 507),
        cw.audio("I want to book for Tuesday", 507),
    ):
        assert post_webhook(web, payload, company="llm", secret="llm-secret").status_code == 202
    wait_for(lambda: stand.replies(507), timeout=15)
    time.sleep(0.5)
    with stand.lock:
        read = [c["json"]["messages"][-1]["content"] for c in stand.completions]
    assert read == [  # one burst, one completion, what each attachment carries in order
        "[location: Clinic, Rua Augusta 10 (-23.55, -46.65)]\n"
        "[contact card: Joao Lima +55 11 98888-7777]\n"
        "[voice note: I want to book for Tuesday]"
    ]
