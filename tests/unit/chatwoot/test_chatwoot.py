"""The Chatwoot client against the local stand-in (REST shapes of Chatwoot v4.16)."""

from __future__ import annotations

import pytest

from app.chatwoot.client import ChatwootClient
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
    contact_message = 4242  # the message the reply answers: a reply to it has a higher id
    created = client.create_message(1, "42", "booked for Tuesday")
    assert created is not None and created > contact_message
    assert client.find_replies(1, "42", "booked for Tuesday", contact_message) is None  # bot token
    stand.can_read = True
    assert client.find_replies(1, "42", "booked for Tuesday", contact_message) == [created]  # its id
    assert client.find_replies(1, "42", "something else", contact_message) == []
    assert client.find_replies(1, "42", "booked for Tuesday", created) == []  # not newer than that one


def test_find_replies_tells_newer_by_id_whatever_chatwoots_clock_says(client, stand: Stand) -> None:
    """Review finding 7: Chatwoot's clock is ten minutes behind this machine's (self-hosted
    elsewhere): the reply it created is still found, since "after" is told by message id."""
    stand.can_read = True
    stand.clock_offset = -600.0
    created = client.create_message(1, "42", "see you at 10")
    assert client.find_replies(1, "42", "see you at 10", 4242) == [created]
