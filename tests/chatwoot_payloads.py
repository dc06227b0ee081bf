"""Realistic Chatwoot v4.16 webhook payloads (shapes of Message#webhook_data)."""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(9000)

CONTACT = {
    "id": 301,
    "name": "Maria Souza",
    "avatar": "",
    "type": "contact",
    "account": {"id": 1, "name": "Clinic"},
    "identifier": None,
    "phone_number": "+5511999990000",
    "email": None,
    "additional_attributes": {},
    "custom_attributes": {},
    "thumbnail": "",
}
AGENT = {"id": 7, "name": "Ana (agent)", "email": "ana@example.com", "type": "user", "avatar_url": ""}
AGENT_BOT = {"id": 3, "name": "Gateway bot", "avatar_url": "", "type": "agent_bot"}


def _conversation(conversation_id: int, status: str = "pending") -> dict[str, Any]:
    return {
        "additional_attributes": {},
        "can_reply": True,
        "channel": "Channel::Whatsapp",
        "contact_inbox": {"id": 88, "contact_id": 301, "inbox_id": 4, "source_id": "5511999990000"},
        "id": conversation_id,
        "inbox_id": 4,
        "messages": [],
        "labels": [],
        "meta": {
            "sender": CONTACT,
            "assignee": None,
            "assignee_type": None,
            "team": None,
            "hmac_verified": False,
        },
        "status": status,
        "custom_attributes": {},
        "snoozed_until": None,
        "unread_count": 1,
        "first_reply_created_at": None,
        "priority": None,
        "waiting_since": 1764000000,
        "agent_last_seen_at": 0,
        "contact_last_seen_at": 0,
        "last_activity_at": 1764000000,
        "timestamp": 1764000000,
        "created_at": 1764000000,
        "updated_at": 1764000000.5,
    }


def message(
    content: str | None,
    conversation_id: int = 42,
    *,
    message_id: int | None = None,
    message_type: str = "incoming",
    private: bool = False,
    sender: dict[str, Any] | None = CONTACT,
    attachments: list[dict[str, Any]] | None = None,
    status: str = "pending",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account": {"id": 1, "name": "Clinic"},
        "additional_attributes": {},
        "content_attributes": {},
        "content_type": "text",
        "content": content,
        "conversation": _conversation(conversation_id, status),
        "created_at": "2026-11-24T10:00:00.000Z",
        "id": message_id if message_id is not None else next(_ids),
        "inbox": {"id": 4, "name": "WhatsApp"},
        "message_type": message_type,
        "private": private,
        "sender": sender,
        "source_id": "wamid.HBgLNTUxMTk5OTk5MDAwMBUCABIYFjNFQjA",
        "event": "message_created",
    }
    if attachments:
        body["attachments"] = attachments
    return body


def image_with_caption(caption: str, conversation_id: int = 42) -> dict[str, Any]:
    return message(
        caption,
        conversation_id,
        attachments=[
            {
                "id": 55,
                "message_id": 0,
                "file_type": "image",
                "account_id": 1,
                "extension": None,
                "data_url": "https://chatwoot.example/rails/active_storage/blobs/photo.jpg",
                "thumb_url": "https://chatwoot.example/rails/active_storage/blobs/photo_thumb.jpg",
                "file_size": 48213,
                "width": 1080,
                "height": 1440,
            }
        ],
    )


def agent_reply(content: str, conversation_id: int = 42) -> dict[str, Any]:
    return message(content, conversation_id, message_type="outgoing", sender=AGENT, status="open")


def private_note(content: str, conversation_id: int = 42) -> dict[str, Any]:
    return message(content, conversation_id, message_type="outgoing", private=True, sender=AGENT)


def bot_own_reply(content: str, conversation_id: int = 42) -> dict[str, Any]:
    return message(content, conversation_id, message_type="outgoing", sender=AGENT_BOT)


def status_changed(conversation_id: int, status: str) -> dict[str, Any]:
    body = _conversation(conversation_id, status)
    body["event"] = "conversation_status_changed"
    body["changed_attributes"] = [{"status": {"previous_value": "open", "current_value": status}}]
    return body


def webwidget_triggered() -> dict[str, Any]:
    return {
        "id": 12,
        "contact": CONTACT,
        "inbox": {"id": 5, "name": "Website"},
        "account": {"id": 1, "name": "Clinic"},
        "current_conversation": None,
        "source_id": "b1d2",
        "event": "webwidget_triggered",
        "event_info": {"initiated_at": {"timestamp": "2026-11-24T10:00:00Z"}, "referer": "https://x"},
    }
