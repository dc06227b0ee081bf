"""The Chatwoot client against the local stand-in (REST shapes of Chatwoot v4.16)."""

from __future__ import annotations

import time

import pytest

from app.chatwoot import ChatwootClient
from app.errors import ChatwootError
from app.settings import CompanyConfig
from tests.support import Stand


@pytest.fixture
def client(stand: Stand) -> ChatwootClient:
    stand.reset()
    config = CompanyConfig(chatwoot_base_url=stand.url, chatwoot_api_token="cw-token")
    return ChatwootClient(config, timeout=2, retries=1)


def test_create_message_sends_the_documented_body_and_returns_the_id(client, stand: Stand) -> None:
    message_id = client.create_message(1, "42", "hello")
    request = stand.calls("messages")[0]
    assert request["path"] == "/api/v1/accounts/1/conversations/42/messages"
    assert request["json"] == {"content": "hello", "message_type": "outgoing", "private": False}
    assert isinstance(message_id, int)


def test_typing_and_handoff_bodies(client, stand: Stand) -> None:
    client.typing(1, "42", True)
    client.typing(1, "42", False)
    client.open_conversation(1, "42")
    assert [r["json"] for r in stand.calls("toggle_typing_status")] == [
        {"typing_status": "on", "is_private": False},
        {"typing_status": "off", "is_private": False},
    ]
    assert stand.calls("toggle_status")[0]["json"] == {"status": "open"}


def test_wrong_token_is_a_clear_error(stand: Stand) -> None:
    stand.reset()
    bad = ChatwootClient(
        CompanyConfig(chatwoot_base_url=stand.url, chatwoot_api_token="nope"), timeout=2, retries=1
    )
    with pytest.raises(ChatwootError, match="401"):
        bad.create_message(1, "42", "x")


def test_find_replies_reads_back_only_with_a_readable_token(client, stand: Stand) -> None:
    before = time.time()
    created = client.create_message(1, "42", "booked for Tuesday")
    assert client.find_replies(1, "42", "booked for Tuesday", before) is None  # bot token: cannot tell
    stand.can_read = True
    assert client.find_replies(1, "42", "booked for Tuesday", before) == [created]  # the id Chatwoot gave
    assert client.find_replies(1, "42", "something else", before) == []
    assert client.find_replies(1, "42", "booked for Tuesday", before + 60) == []  # an older message
