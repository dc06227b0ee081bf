import pytest

from app.payload import AgentReply, Ignored, InvalidPayload, StatusChange, StoredMessage, parse_webhook
from tests import chatwoot_payloads as cw


def test_incoming_text_is_kept_compactly() -> None:
    body = cw.message("hi there", 42, message_id=777)
    parsed = parse_webhook(body, received_at=1.5)
    assert isinstance(parsed, StoredMessage)
    assert (parsed.id, parsed.conversation_id, parsed.account_id, parsed.inbox_id) == (777, "42", 1, 4)
    assert parsed.content == "hi there" and parsed.is_text_only
    assert parsed.contact == {"id": 301, "name": "Maria Souza", "phone_number": "+5511999990000"}
    assert StoredMessage.from_json(parsed.to_json()) == parsed
    # The stored form drops Chatwoot's nested conversation.
    import json

    assert len(parsed.to_json()) * 3 < len(json.dumps(body))


def test_image_with_caption_keeps_attachment_urls() -> None:
    parsed = parse_webhook(cw.image_with_caption("my rash"), 0)
    assert isinstance(parsed, StoredMessage) and not parsed.is_text_only
    assert parsed.content == "my rash"
    assert parsed.attachments[0].file_type == "image"
    assert parsed.attachments[0].thumb_url.endswith("photo_thumb.jpg")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (cw.private_note("internal"), "message_type is 'outgoing'"),
        (cw.bot_own_reply("bot says"), "message_type is 'outgoing'"),
        (cw.message("note", private=True), "private note"),
        (cw.message("as agent", sender=cw.AGENT), "sent by user"),
        (cw.message("as bot", sender=cw.AGENT_BOT), "sent by agent_bot"),
        (cw.message("tpl", message_type="template"), "message_type is 'template'"),
        (cw.message(None), "empty message"),
        (cw.message("   "), "empty message"),
    ],
)
def test_messages_not_for_the_bot_are_ignored(payload, reason: str) -> None:
    parsed = parse_webhook(payload, 0)
    assert isinstance(parsed, Ignored) and parsed.reason.startswith(reason)


def test_incoming_with_null_sender_is_for_the_bot() -> None:
    assert isinstance(parse_webhook(cw.message("hi", sender=None), 0), StoredMessage)


def test_status_change_and_other_events() -> None:
    assert parse_webhook(cw.status_changed(42, "pending"), 0) == StatusChange("42", "pending")
    widget = parse_webhook(cw.webwidget_triggered(), 0)
    assert isinstance(widget, Ignored) and "webwidget_triggered" in widget.reason


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {"event": "message_created", "id": 1},
        {"event": "message_created", "conversation": {"id": 2}},
        {"event": "message_created", "id": "abc", "conversation": {"id": 2}},
        {"event": "message_created", "id": 1, "conversation": {"id": True}},
    ],
)
def test_unusable_message_created_is_invalid(body) -> None:
    with pytest.raises(InvalidPayload):
        parse_webhook(body, 0)


def test_public_agent_reply_is_an_agent_reply() -> None:
    parsed = parse_webhook(cw.agent_reply("I'll take it from here", 42), 0)
    assert isinstance(parsed, AgentReply)
    assert (parsed.conversation_id, parsed.content) == ("42", "I'll take it from here")
