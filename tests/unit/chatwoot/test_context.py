"""BOT_CONTEXT: what of the conversation is read from a message_created payload as
Chatwoot serializes it (tests/chatwoot_payloads.py), the caps on what a payload can
make the gateway store, and the setting's parser."""

from __future__ import annotations

import json

import pytest

from app.chatwoot.context import MAX_ATTRIBUTES, MAX_VALUE_CHARS, read_context
from app.settings import ConfigError, ContextPart, load_settings
from tests import chatwoot_payloads as cw

REFERRAL = {
    "source_url": "https://fb.me/3cr4Wqqkv",
    "source_id": "120208979577070124",
    "source_type": "ad",
    "headline": "Clareamento dental com 30% off",
    "body": "Agende sua avaliação",
    "media_type": "image",
    "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ",
}


def rich_message(**extra: object) -> dict:
    return cw.message(
        "quero agendar",
        77,
        labels=["vip", "clareamento"],
        custom_attributes={"plan": "gold", "order_id": 4512},
        team=cw.TEAM_PUSH,
        contact_attributes={"cpf_checked": True, "city": "Campinas"},
        assignee=cw.AGENT_BOT_PUSH,
        content_attributes={
            "referral": REFERRAL,
            "in_reply_to": 9120,
            "in_reply_to_external_id": "wamid.HBgL",
        },
        **extra,
    )


def test_every_part_is_read_from_the_payload_as_chatwoot_sends_it() -> None:
    context = read_context(rich_message(), tuple(ContextPart))
    assert context == {
        "labels": ["vip", "clareamento"],
        "conversation_attributes": {"plan": "gold", "order_id": 4512},
        "contact_attributes": {"cpf_checked": True, "city": "Campinas"},
        "referral": REFERRAL,
        "inbox": {"id": 4, "name": "WhatsApp", "channel": "Channel::Whatsapp"},
        "assignee": {"id": 3, "name": "Gateway bot", "type": "agent_bot"},
        "team": {"id": 2, "name": "vendas"},
        "in_reply_to": {"id": 9120, "external_id": "wamid.HBgL"},
    }


def test_only_the_selected_parts_and_what_the_payload_does_not_carry_is_left_out() -> None:
    plain = cw.message("oi", 78)  # no referral, no quote, nobody assigned, no team
    parts = (
        ContextPart.LABELS,
        ContextPart.REFERRAL,
        ContextPart.QUOTED,
        ContextPart.ASSIGNEE,
        ContextPart.TEAM,
    )
    assert read_context(plain, parts) == {"labels": [], "assignee": None, "team": None}
    assert read_context(rich_message(), (ContextPart.INBOX,)) == {
        "inbox": {"id": 4, "name": "WhatsApp", "channel": "Channel::Whatsapp"}
    }
    assert read_context({"conversation": "not an object"}, tuple(ContextPart)) == {
        "inbox": {"id": None, "name": None, "channel": None}
    }


def test_what_a_payload_carries_is_capped() -> None:
    huge = {f"attr{i}": "x" * 5000 for i in range(MAX_ATTRIBUTES + 30)}
    huge["nested"] = {"deep": [1, 2, {"k": "v"}]}
    body = cw.message("oi", 79, custom_attributes=huge, labels=["l"] * 500)
    context = read_context(body, (ContextPart.CONVERSATION_ATTRIBUTES, ContextPart.LABELS))
    attributes = context["conversation_attributes"]
    assert len(attributes) == MAX_ATTRIBUTES
    assert all(len(v) == MAX_VALUE_CHARS for v in attributes.values())
    assert len(context["labels"]) == 50
    nested = read_context(
        cw.message("oi", 79, custom_attributes={"nested": {"deep": [1]}}), tuple(ContextPart)
    )
    assert nested["conversation_attributes"] == {"nested": json.dumps({"deep": [1]})}
    assert len(json.dumps(context)) < 40_000  # whatever the payload, the stored context is bounded


def test_bot_context_setting_names_a_wrong_part_and_takes_all_or_none(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "CHATWOOT_WEBHOOK_SECRET": "s"}
    assert load_settings(env).company("default").bot_context == ()
    assert load_settings({**env, "BOT_CONTEXT": "all"}).company("default").bot_context == tuple(ContextPart)
    assert load_settings({**env, "BOT_CONTEXT": "labels, Team,labels"}).company("default").bot_context == (
        ContextPart.LABELS,
        ContextPart.TEAM,
    )
    with pytest.raises(ConfigError, match="BOT_CONTEXT: unknown part 'tags'"):
        load_settings({**env, "BOT_CONTEXT": "labels,tags"})
