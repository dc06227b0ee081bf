"""What the gateway keeps of a Chatwoot webhook: one typed value per kind of event
(``StoredMessage`` for a message that reaches the bot, ``StatusChange``,
``AgentReply``, ``MessageUpdate``, ``Ignored``), each with what it says of who holds
its conversation (``seen``), and the stored form of a message in its queue
(``StoredMessage.to_json``, ``read_stored``, ``received_at``). ``app.chatwoot.payload``
makes them from Chatwoot's JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from app.chatwoot.replies import encodable
from app.conversation.ownership import Seen
from app.errors import GatewayError

__all__ = [
    "AgentReply",
    "Attachment",
    "Ignored",
    "InvalidPayload",
    "MessageUpdate",
    "StatusChange",
    "StoredMessage",
    "read_stored",
    "received_at",
]


class InvalidPayload(GatewayError, ValueError):
    """The body is JSON but not a usable Chatwoot event (answered with 400)."""


@dataclass(frozen=True)
class Ignored:
    """An event or message that is not for the bot, with the reason (and, for a message,
    what it says of its conversation: who holds it is observed all the same)."""

    reason: str
    conversation_id: str | None = None
    status: str | None = None
    inbox_id: int | None = None
    assignee: str | None = None  # app.conversation.ownership.assignee_of; None when the payload does not say
    turn: bool = False  # an outgoing message to the contact (not the gateway's own): app.batching.pace

    @property
    def seen(self) -> Seen:
        return Seen(self.status or "", False, self.assignee or "")


@dataclass(frozen=True)
class StatusChange:
    """A conversation event carrying its status and assignee (``STATUS_EVENTS``).
    ``explicit``: the event *is* a status change; ``conversation_updated`` is one only
    when its ``changed_attributes`` name the status, else it reports the current one.
    ``assignee_changed``: its ``changed_attributes`` name the assignee."""

    conversation_id: str
    status: str
    explicit: bool = True
    inbox_id: int | None = None
    labels: tuple[str, ...] | None = field(default=None, compare=False)  # when the event says
    assignee: str | None = None
    assignee_changed: bool = False

    @property
    def seen(self) -> Seen:
        return Seen(self.status, self.explicit, self.assignee or "", self.assignee_changed)


@dataclass(frozen=True)
class AgentReply:
    """A public reply by a human: an agent in Chatwoot (or the gateway's own reply, seen
    through a user token), or an agent on the WhatsApp Business phone (``via_phone``)."""

    conversation_id: str
    message_id: int
    content: str
    status: str | None = None
    inbox_id: int | None = None
    via_phone: bool = False
    assignee: str | None = None

    @property
    def seen(self) -> Seen:
        return Seen(self.status or "", False, self.assignee or "")


@dataclass(frozen=True)
class MessageUpdate:
    """``message_updated`` for a contact's message: an edit, Chatwoot's own transcript of a
    voice note arriving, or a deletion (``deleted``). Never a new message: it changes the
    message while it waits in its batch, and nothing once the message was taken."""

    message: StoredMessage
    deleted: bool = False

    @property
    def conversation_id(self) -> str:
        return self.message.conversation_id

    @property
    def inbox_id(self) -> int | None:
        return self.message.inbox_id

    @property
    def seen(self) -> Seen:
        return self.message.seen


@dataclass(frozen=True)
class Attachment:
    """What an attachment carries, in Chatwoot's field names; None where it has nothing."""

    file_type: str
    data_url: str | None = None
    thumb_url: str | None = None
    fallback_title: str | None = None  # a location's title, a contact card's phone number
    coordinates_lat: float | None = None
    coordinates_long: float | None = None
    meta: dict[str, str] | None = None  # a contact card's firstName/lastName
    transcribed_text: str | None = None  # an audio's transcript, when Chatwoot made one
    text: str | None = None  # a document's text, once read (app.bots.documents)
    error: str | None = None  # why a voice note or a document reaches the bot without text

    def as_dict(self) -> dict[str, Any]:
        """The fields it carries (the bot request's form, and the stored one)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """What it is, as text a language model can read (``[location: …]``)."""
        kind = self.file_type
        if kind == "location":
            where = self.fallback_title or "a place"
            if self.coordinates_lat is not None and self.coordinates_long is not None:
                where += f" ({self.coordinates_lat:g}, {self.coordinates_long:g})"
            return f"[location: {where}]"
        if kind == "contact":
            name = " ".join(v for k, v in (self.meta or {}).items() if k in ("firstName", "lastName"))
            name = name or (self.meta or {}).get("formattedName", "")
            card = " ".join(p for p in (name, self.fallback_title or "") if p)
            return f"[contact card: {card or 'no details'}]"
        if kind == "audio":
            return (
                f"[voice note: {self.transcribed_text}]"
                if self.transcribed_text
                else f"[voice note{self._why}]"
            )
        if kind == "file" and self.text:
            return f"[document: {self.text}]"
        return f"[{kind}: {self.data_url}{self._why}]" if self.data_url else f"[{kind}]"

    @property
    def _why(self) -> str:
        return f" (not read: {self.error})" if self.error else ""


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
    # What the bot is told of the conversation besides this message (BOT_CONTEXT,
    # app.chatwoot.context); None when the company selects nothing (not stored then).
    context: dict[str, Any] | None = None
    # Read from the webhook for the decisions made there, not stored: the
    # conversation's labels (None: the payload did not say), for a group
    # conversation its identifiers (group source id, title), and its assignee.
    labels: tuple[str, ...] | None = field(default=None, compare=False)
    group: tuple[str, ...] | None = field(default=None, compare=False)
    assignee: str | None = field(default=None, compare=False)
    channel: str | None = field(default=None, compare=False)  # Channel::Whatsapp, Channel::Api, …

    @property
    def contact_id(self) -> Any:
        """The sender's Chatwoot contact id, or None when the payload did not carry one."""
        return self.contact.get("id") if isinstance(self.contact, dict) else None

    @property
    def seen(self) -> Seen:
        """What the message says of who holds its conversation (app.conversation.ownership)."""
        return Seen(self.conversation_status or "", False, self.assignee or "")

    @property
    def is_text_only(self) -> bool:
        return not self.attachments

    @property
    def bot_text(self) -> str:
        """What the message says, as text, in order: its content (an image's caption),
        then what its other attachments carry (a voice note's transcript, a location);
        an image itself goes to the bot as an attachment, not as words."""
        described = [a.describe() for a in self.attachments if a.file_type != "image"]
        return "\n".join(p for p in (self.content.strip(), *described) if p)

    def _stored(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies every field, a tenth of a webhook's time.
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "account_id": self.account_id,
            "content": self.content,
            "received_at": self.received_at,
            "created_at": self.created_at,
            "inbox_id": self.inbox_id,
            "attachments": [a.as_dict() for a in self.attachments],
            "contact": self.contact,
            "conversation_status": self.conversation_status,
            **({"context": self.context} if self.context is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self._stored(), separators=(",", ":"), ensure_ascii=False)

    def open_json(self) -> str:
        """The stored form up to its arrival time, ``{...,"received_at":``: the enqueue
        script completes it with Redis's clock, so no web clock decides a due time."""
        data = self._stored()
        del data["received_at"]
        text = encodable(json.dumps(data, separators=(",", ":"), ensure_ascii=False))  # names, URLs
        return text[:-1] + ',"received_at":'

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredMessage:
        data = json.loads(raw)
        data["attachments"] = tuple(Attachment(**a) for a in data.get("attachments") or ())
        return cls(**data)


def read_stored(raw: str | bytes | None) -> StoredMessage | None:
    """A stored message, or None when ``raw`` is absent or unreadable (where an
    unreadable entry is dead-lettered later, when its batch is claimed)."""
    if raw is None:
        return None
    try:
        return StoredMessage.from_json(raw)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def received_at(raw: str | bytes | None) -> float | None:
    """Arrival time of a stored message, without parsing the rest; None if unreadable."""
    if raw is None:
        return None
    try:
        return float(json.loads(raw)["received_at"])
    except (ValueError, KeyError, TypeError):
        return None
