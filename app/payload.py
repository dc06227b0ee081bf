"""Chatwoot webhook payloads parsed into typed objects.

Shapes follow Chatwoot v4.16 (``app/models/message.rb#webhook_data``,
``app/presenters/conversations/event_data_presenter.rb``). Only what the bot
and the reply need is kept: the stored form (``StoredMessage.to_json``) is a
small fraction of Chatwoot's nested payload.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from app.replies import encodable

__all__ = [
    "AgentReply",
    "Attachment",
    "Ignored",
    "InvalidPayload",
    "StatusChange",
    "StoredMessage",
    "parse_webhook",
    "received_at",
]

_ATTACHMENT_FIELDS = ("file_type", "data_url", "thumb_url")
_CONTACT_FIELDS = ("id", "name", "phone_number", "email", "identifier")
BOT_SENDER_TYPES = ("user", "agent_bot")


class InvalidPayload(ValueError):
    """The body is JSON but not a usable Chatwoot event (answered with 400)."""


@dataclass(frozen=True)
class Ignored:
    """An event or message that is not for the bot, with the reason."""

    reason: str
    conversation_id: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class StatusChange:
    """A conversation status change (``conversation_status_changed``/``_updated``)."""

    conversation_id: str
    status: str


@dataclass(frozen=True)
class AgentReply:
    """A public reply by a human agent (or the gateway's own, seen through a user token)."""

    conversation_id: str
    message_id: int
    content: str


@dataclass(frozen=True)
class Attachment:
    file_type: str
    data_url: str | None = None
    thumb_url: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    """One incoming message as kept in the conversation's Redis list."""

    id: int
    conversation_id: str
    account_id: int
    content: str
    received_at: float
    created_at: int | None = None
    inbox_id: int | None = None
    attachments: tuple[Attachment, ...] = ()
    contact: dict[str, Any] = field(default_factory=dict)
    conversation_status: str | None = None

    @property
    def is_text_only(self) -> bool:
        return not self.attachments

    def to_json(self) -> str:
        data = asdict(self)
        data["attachments"] = [asdict(a) for a in self.attachments]
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def open_json(self) -> str:
        """The stored form up to its arrival time, ``{...,"received_at":``: the enqueue
        script completes it with Redis's clock, so no web clock decides a due time."""
        data = asdict(self)
        data["attachments"] = [asdict(a) for a in self.attachments]
        del data["received_at"]
        text = encodable(json.dumps(data, separators=(",", ":"), ensure_ascii=False))  # names, URLs
        return text[:-1] + ',"received_at":'

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredMessage:
        data = json.loads(raw)
        data["attachments"] = tuple(Attachment(**a) for a in data.get("attachments") or ())
        return cls(**data)


def received_at(raw: str | bytes | None) -> float | None:
    """Arrival time of a stored message, without parsing the rest; None if unreadable."""
    if raw is None:
        return None
    try:
        return float(json.loads(raw)["received_at"])
    except (ValueError, KeyError, TypeError):
        return None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidPayload(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise InvalidPayload(f"{what} must be an integer, got {value!r}"[:200])


def _optional_int(value: Any) -> int | None:
    try:
        return _int(value, "") if value is not None else None
    except InvalidPayload:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _attachments(raw: Any) -> tuple[Attachment, ...]:
    if not isinstance(raw, list):
        return ()
    found = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("file_type"), str):
            values = {k: item.get(k) for k in _ATTACHMENT_FIELDS}
            found.append(Attachment(**{k: v if isinstance(v, str) else None for k, v in values.items()}))
    return tuple(found)


def _contact(sender: dict[str, Any]) -> dict[str, Any]:
    return {k: sender[k] for k in _CONTACT_FIELDS if isinstance(sender.get(k), str | int)}


def _message(body: dict[str, Any], received_at: float) -> StoredMessage | Ignored:
    conversation = _dict(body.get("conversation"))
    if "id" not in conversation or "id" not in body:
        raise InvalidPayload("message_created without conversation.id or id")
    conversation_id = str(_int(conversation["id"], "conversation.id"))
    message_id = _int(body["id"], "id")
    status = conversation.get("status") if isinstance(conversation.get("status"), str) else None
    message_type = body.get("message_type")
    sender = _dict(body.get("sender"))
    if message_type == "outgoing" and body.get("private") is not True and sender.get("type") == "user":
        content = encodable(body.get("content")) if isinstance(body.get("content"), str) else ""
        return AgentReply(conversation_id, message_id, content)
    if message_type != "incoming":
        return Ignored(f"message_type is {message_type!r}, not incoming", conversation_id, status)
    if body.get("private") is True:
        return Ignored("private note", conversation_id, status)
    if sender.get("type") in BOT_SENDER_TYPES:
        return Ignored(f"sent by {sender['type']}", conversation_id, status)
    content = encodable(body.get("content")) if isinstance(body.get("content"), str) else ""
    attachments = _attachments(body.get("attachments"))
    if not content.strip() and not attachments:
        return Ignored("empty message", conversation_id, status)
    account = _dict(body.get("account"))
    account_id = _int(account.get("id", conversation.get("account_id")), "account.id")
    return StoredMessage(
        id=message_id,
        conversation_id=conversation_id,
        account_id=account_id,
        content=content,
        received_at=received_at,
        created_at=_optional_int(body.get("created_at")),
        inbox_id=_optional_int(_dict(body.get("inbox")).get("id")),
        attachments=attachments,
        contact=_contact(sender),
        conversation_status=status,
    )


def parse_webhook(body: Any, received_at: float) -> StoredMessage | StatusChange | AgentReply | Ignored:
    """Classify a decoded webhook body; raise ``InvalidPayload`` when unusable."""
    if not isinstance(body, dict):
        raise InvalidPayload("body must be a JSON object")
    event = body.get("event")
    if event == "message_created":
        return _message(body, received_at)
    if event in ("conversation_status_changed", "conversation_updated", "conversation_opened"):
        status = body.get("status")
        conversation_id = body.get("id")
        if isinstance(status, str) and conversation_id is not None:
            return StatusChange(str(_int(conversation_id, "id")), status)
    return Ignored(f"event {str(event)[:64]!r} is not for the bot")
