import json

import pytest

from app.chatwoot.body import decode_body
from app.chatwoot.messages import AgentReply, Ignored, InvalidPayload, StatusChange, StoredMessage
from app.chatwoot.payload import parse_webhook
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
    assert parse_webhook(cw.status_changed(42, "pending"), 0) == StatusChange(
        "42", "pending", True, 4, assignee="none"
    )
    # conversation_updated reports the current status; it is not itself a change of it
    assert parse_webhook(cw.conversation_updated(42), 0) == StatusChange(
        "42", "pending", False, 4, assignee="none"
    )
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


def test_created_at_is_read_from_chatwoots_iso_string() -> None:
    parsed = parse_webhook(cw.message("hi"), 0)
    assert isinstance(parsed, StoredMessage) and parsed.created_at == cw.CREATED_AT_UNIX
    legacy = cw.message("hi")
    legacy["created_at"] = 1763978400  # an integer is accepted too
    assert parse_webhook(legacy, 0).created_at == 1763978400  # type: ignore[union-attr]
    broken = cw.message("hi")
    broken["created_at"] = "yesterday"
    assert parse_webhook(broken, 0).created_at is None  # type: ignore[union-attr]


def test_a_contact_sender_without_type_is_for_the_bot() -> None:
    assert "type" not in cw.CONTACT
    parsed = parse_webhook(cw.message("hello"), 0)
    assert isinstance(parsed, StoredMessage) and parsed.contact["id"] == 301


def test_location_contact_card_and_voice_note_keep_what_they_carry() -> None:
    place = parse_webhook(cw.location("Clinic, Rua Augusta 10", -23.55, -46.65), 0)
    assert isinstance(place, StoredMessage)
    assert place.attachments[0].as_dict() == {
        "file_type": "location",
        "fallback_title": "Clinic, Rua Augusta 10",
        "coordinates_lat": -23.55,
        "coordinates_long": -46.65,
    }
    assert place.attachments[0].describe() == "[location: Clinic, Rua Augusta 10 (-23.55, -46.65)]"
    card = parse_webhook(cw.contact_card("Joao", "Lima", "+55 11 98888-7777"), 0)
    assert isinstance(card, StoredMessage)
    assert card.attachments[0].describe() == "[contact card: Joao Lima +55 11 98888-7777]"
    voice = parse_webhook(cw.audio("I want to book for Tuesday"), 0)
    assert isinstance(voice, StoredMessage)
    assert voice.attachments[0].transcribed_text == "I want to book for Tuesday"
    assert voice.attachments[0].describe() == "[voice note: I want to book for Tuesday]"
    untranscribed = parse_webhook(cw.audio(None), 0)
    assert untranscribed.attachments[0].describe() == "[voice note]"  # type: ignore[union-attr]
    for parsed in (place, card, voice):  # what the bot gets survives the stored form
        assert StoredMessage.from_json(parsed.to_json()) == parsed


def test_an_agent_answering_from_the_whatsapp_phone_is_a_human_reply() -> None:
    parsed = parse_webhook(cw.phone_echo("Hi, Ana here from the clinic phone", 42), 0)
    assert isinstance(parsed, AgentReply) and parsed.via_phone and parsed.status == "pending"
    automation = parse_webhook(cw.automation_message("We are closed on Sundays", 42), 0)
    assert isinstance(automation, Ignored) and "automation" in automation.reason


def test_every_event_says_its_inbox() -> None:
    assert parse_webhook(cw.message("hi", inbox_id=9), 0).inbox_id == 9  # type: ignore[union-attr]
    assert parse_webhook(cw.agent_reply("x"), 0).inbox_id == 4  # type: ignore[union-attr]
    assert parse_webhook(cw.private_note("x"), 0).inbox_id == 4  # type: ignore[union-attr]


@pytest.mark.parametrize("bad_id", ["²", "٣", "1e3", " "])
def test_an_id_in_a_string_must_be_ascii_digits(bad_id: str) -> None:
    body = cw.message("hi", 42, message_id=7)
    body["id"] = bad_id
    with pytest.raises(InvalidPayload, match="must be an integer"):
        parse_webhook(body, 0.0)
    body["id"] = " 7 "
    assert parse_webhook(body, 0.0).id == 7


def test_a_lone_surrogate_anywhere_in_the_body_becomes_a_replacement_character() -> None:
    raw = json.dumps(cw.status_changed(5, "resolvedX")).replace("X", "\\ud83d").encode()
    assert decode_body(raw)["status"] == "resolved\ufffd"
    paired = json.dumps({"content": "\U0001f600"}).encode()  # an emoji as two escapes: kept
    assert decode_body(paired) == {"content": "\U0001f600"}


def test_a_message_keeps_at_most_max_content_chars_and_max_attachments() -> None:
    """Security review 2026-12-03, finding 4: the body limit (1 MB) let one message take a
    megabyte of the shared Redis, in its queue and again in a dead letter; and a message
    could carry any number of media addresses."""
    from app.chatwoot.payload import MAX_ATTACHMENTS, MAX_CONTENT_CHARS, TRUNCATED

    body = cw.message("x" * 900_000, 42)
    body["attachments"] = [
        {"file_type": "image", "data_url": f"https://chatwoot.example/{n}.jpg"} for n in range(50)
    ]
    parsed = parse_webhook(body, 0.0)
    assert isinstance(parsed, StoredMessage)
    assert len(parsed.content) == MAX_CONTENT_CHARS and parsed.content.endswith(TRUNCATED)
    assert len(parsed.attachments) == MAX_ATTACHMENTS
    assert len(parsed.to_json()) < MAX_CONTENT_CHARS + 5_000
    long = parse_webhook(cw.message("y" * 100_000, 42), 0.0)
    assert isinstance(long, StoredMessage) and long.content == "y" * 100_000  # untouched
