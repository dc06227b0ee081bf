"""BOT_CONTEXT: the bot is told what the operator selects of the conversation — labels,
custom attributes, the ad the contact came from, the inbox, the assignee and team, and
what a message quotes (with the quoted text when the gateway has it: one of its own
replies). Per inbox; nothing when unset. Through the real pipeline: signed webhooks
shaped like Chatwoot's serializers, real Redis, a real worker, the local Chatwoot and
bot stand-ins."""

from __future__ import annotations

import pytest
import redis

from app.bots import REQUEST_VERSION
from tests import chatwoot_payloads as cw
from tests.conftest import SECRET, chatwoot_company, companies_env, make_client, openai_env, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow

REFERRAL = {"source_url": "https://fb.me/3cr4Wqqkv", "source_type": "ad", "headline": "Clareamento 30% off"}
STATE = {
    "labels": ["vip", "clareamento"],
    "custom_attributes": {"plan": "gold"},
    "team": cw.TEAM_PUSH,
    "contact_attributes": {"city": "Campinas"},
    "assignee": cw.AGENT_BOT_PUSH,
}


def _calls(stand: Stand, conversation: int) -> list[dict]:
    return [c for c in stand.bot_calls if str(c["conversation_id"]) == str(conversation)]


def test_the_http_bot_gets_the_selected_context_and_the_text_of_a_quoted_reply_per_inbox(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    company = chatwoot_company(
        "default",
        stand,
        chatwoot_webhook_secret=SECRET,
        bot_context="all",
        inboxes={"9": {"bot_context": "none"}},
    )
    env = companies_env(redis_url, tmp_path, [company])
    workers.append(Worker(env, "context").start(rdb))
    web = make_client(env)

    first = cw.message(
        "quero agendar", 701, content_attributes={"referral": REFERRAL, "in_reply_to": 9120}, **STATE
    )
    assert post_webhook(web, first).status_code == 202
    wait_for(lambda: stand.replies(701), timeout=15)
    (call,) = _calls(stand, 701)
    assert call["version"] == REQUEST_VERSION == 2
    assert call["context"] == {
        "labels": ["vip", "clareamento"],
        "conversation_attributes": {"plan": "gold"},
        "contact_attributes": {"city": "Campinas"},
        "referral": REFERRAL,
        "inbox": {"id": 4, "name": "WhatsApp", "channel": "Channel::Whatsapp"},
        "assignee": {"id": 3, "name": "Gateway bot", "type": "agent_bot"},
        "team": {"id": 2, "name": "vendas"},
    }
    # A message the gateway never saw is quoted: its id, no text.
    assert call["messages"][0]["in_reply_to"] == {"id": 9120, "content": None}

    # The contact quotes the bot's reply (WhatsApp's "reply" on it): the bot sees what it said.
    (posted,) = [r for r in stand.calls("messages") if "/conversations/701/" in r["path"]]
    quoting = cw.message(
        "esse horário serve?", 701, content_attributes={"in_reply_to": posted["id"]}, **STATE
    )
    assert post_webhook(web, quoting).status_code == 202
    wait_for(lambda: len(_calls(stand, 701)) == 2, timeout=15)
    assert _calls(stand, 701)[1]["messages"][0]["in_reply_to"] == {
        "id": posted["id"],
        "content": "quero agendar",
    }

    # Inbox 9 sets BOT_CONTEXT none: the same payload tells the bot nothing more, and the
    # queued message carried nothing more.
    other = cw.message("quero agendar", 702, inbox_id=9, content_attributes={"in_reply_to": 9120}, **STATE)
    assert post_webhook(web, other).status_code == 202
    wait_for(lambda: _calls(stand, 702), timeout=15)
    (plain,) = _calls(stand, 702)
    assert "context" not in plain and "in_reply_to" not in plain["messages"][0]


def test_the_openai_backend_puts_the_selected_context_into_the_system_prompt(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    env = openai_env(
        redis_url,
        stand,
        tmp_path,
        BOT_SYSTEM_PROMPT="Você agenda consultas.",
        BOT_CONTEXT="labels,referral,assignee",
    )
    workers.append(Worker(env, "context-openai").start(rdb))
    web = make_client(env)
    body = cw.message("quero agendar", 703, content_attributes={"referral": REFERRAL}, **STATE)
    assert post_webhook(web, body).status_code == 202
    wait_for(lambda: stand.replies(703), timeout=15)
    system = stand.completions[0]["json"]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith(
        "Você agenda consultas.\n\nAbout this conversation (from Chatwoot):\n"
    )
    assert "- labels: vip, clareamento" in system["content"]
    assert "- the contact came from an ad: source_url=https://fb.me/3cr4Wqqkv;" in system["content"]
    assert "headline=Clareamento 30% off" in system["content"]
    assert "- assigned to: Gateway bot" in system["content"]
    assert "plan" not in system["content"] and "team" not in system["content"]  # not selected
