"""Chatwoot webhook payloads parsed into typed objects.

Shapes follow Chatwoot 4.12 to 4.15 (``app/models/message.rb#webhook_data``,
``app/models/attachment.rb#push_event_data``, the contact's and user's
``webhook_data``, ``app/presenters/conversations/event_data_presenter.rb``):

* ``created_at`` is an ISO-8601 string (an integer is accepted too);
* a contact sender has no ``type`` key; agents are ``type: "user"``, agent bots
  ``"agent_bot"``, Captain ``"captain_assistant"``;
* an agent answering from the WhatsApp Business phone arrives as ``outgoing``
  with ``sender: null`` and ``content_attributes.external_echo: true``: a human
  reply (``AgentReply``); other ``sender: null`` outgoing messages are
  automation rules, not a human;
* attachments: images and files carry ``data_url``/``thumb_url``; a location
  its coordinates and ``fallback_title``; a contact card the phone number in
  ``fallback_title`` and the name in ``meta`` (``firstName``/``lastName``); an
  audio may carry ``transcribed_text``.

Only what the bot and the reply need is kept: the stored form
(``StoredMessage.to_json``) is a small fraction of Chatwoot's nested payload.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from app.chatwoot.replies import encodable
from app.conversation.ownership import Seen, assignee_of

__all__ = [
    "AgentReply",
    "Attachment",
    "Ignored",
    "InvalidPayload",
    "MessageUpdate",
    "Parsed",
    "StatusChange",
    "StoredMessage",
    "decode_body",
    "parse_webhook",
    "read_stored",
    "received_at",
]

_ATTACHMENT_TEXT_FIELDS = ("file_type", "data_url", "thumb_url", "fallback_title", "transcribed_text")
_CONTACT_FIELDS = ("id", "name", "phone_number", "email", "identifier")
_CARD_NAME_FIELDS = ("firstName", "lastName", "formattedName")
BOT_SENDER_TYPES = ("user", "agent_bot", "captain_assistant")
MAX_CONTENT_CHARS = 131_072  # a 100 KB message is still answered whole; longer is cut (TRUNCATED)
TRUNCATED = " […]"
MAX_ATTACHMENTS = 10
# Conversation events that carry its status and assignee (Conversation#webhook_data):
# each is a status change but conversation_updated, which is one only when its
# changed_attributes name the status.
STATUS_EVENTS = (
    "conversation_status_changed",
    "conversation_opened",
    "conversation_resolved",
    "conversation_updated",
)
ASSIGNEE_ATTRIBUTES = ("assignee_id", "assignee_agent_bot_id")


class InvalidPayload(ValueError):
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
            return f"[voice note: {self.transcribed_text}]" if self.transcribed_text else "[voice note]"
        return f"[{kind}]"


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
    # Read from the webhook for the decisions made there, not stored: the
    # conversation's labels (None: the payload did not say), for a group
    # conversation its identifiers (group source id, title), and its assignee.
    labels: tuple[str, ...] | None = field(default=None, compare=False)
    group: tuple[str, ...] | None = field(default=None, compare=False)
    assignee: str | None = field(default=None, compare=False)

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


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidPayload(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        return int(value)  # ASCII digits only: "²" is a digit to isdigit(), and int() refuses it
    raise InvalidPayload(f"{what} must be an integer, got {value!r}"[:200])


def _optional_int(value: Any) -> int | None:
    try:
        return _int(value, "") if value is not None else None
    except InvalidPayload:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _attachment(item: dict[str, Any]) -> Attachment:
    values: dict[str, Any] = {k: item.get(k) for k in _ATTACHMENT_TEXT_FIELDS}
    values = {k: v if isinstance(v, str) and v else None for k, v in values.items()}
    meta = _dict(item.get("meta"))
    if values["transcribed_text"] is None and isinstance(meta.get("transcribed_text"), str):
        values["transcribed_text"] = meta["transcribed_text"] or None
    card = {k: meta[k] for k in _CARD_NAME_FIELDS if isinstance(meta.get(k), str) and meta[k]}
    return Attachment(
        **values,
        coordinates_lat=_number(item.get("coordinates_lat")),
        coordinates_long=_number(item.get("coordinates_long")),
        meta=card or None,
    )


def _attachments(raw: Any) -> tuple[Attachment, ...]:
    """At most ``MAX_ATTACHMENTS`` (WhatsApp sends one per message; Chatwoot's own
    uploads allow a few): whoever can post a webhook cannot make a message carry
    thousands of media addresses."""
    if not isinstance(raw, list):
        return ()
    found = (
        _attachment(item) for item in raw if isinstance(item, dict) and isinstance(item.get("file_type"), str)
    )
    return tuple(itertools.islice(found, MAX_ATTACHMENTS))


def _capped(content: str) -> str:
    """The content as kept in Redis: at most ``MAX_CONTENT_CHARS`` characters (WhatsApp's
    own limit is 4,096, other channels' text is longer, and a 100 KB message is answered
    whole; the body limit alone, 1 MB, would let one message take a megabyte of the
    shared Redis, in its queue and again in a dead letter)."""
    if len(content) <= MAX_CONTENT_CHARS:
        return content
    return content[: MAX_CONTENT_CHARS - len(TRUNCATED)] + TRUNCATED


def _timestamp(value: Any) -> int | None:
    """Unix seconds from Chatwoot's ISO-8601 ``created_at`` (or an integer)."""
    if isinstance(value, str) and value.strip():
        try:
            return int(datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp())
        except ValueError:
            return _optional_int(value)
    return _optional_int(value)


def _inbox_id(body: dict[str, Any], conversation: dict[str, Any]) -> int | None:
    found = _optional_int(_dict(body.get("inbox")).get("id"))
    return found if found is not None else _optional_int(conversation.get("inbox_id"))


def _labels(conversation: dict[str, Any]) -> tuple[str, ...] | None:
    """The conversation's labels (EventDataPresenter's ``labels``), lower case; None when
    the payload has none to say."""
    raw = conversation.get("labels")
    if not isinstance(raw, list):
        return None
    return tuple(str(label).strip().lower() for label in raw if isinstance(label, str | int))


def _group(conversation: dict[str, Any], sender: dict[str, Any]) -> tuple[str, ...] | None:
    """A group conversation's identifiers (its group source id and title; a WhatsApp
    group's contact identifier ends in ``@g.us``), or None for a one-to-one chat."""
    ids = [conversation.get("group_source_id"), conversation.get("group_title")]
    identifier = sender.get("identifier")
    if isinstance(identifier, str) and identifier.endswith("@g.us"):
        ids.append(identifier)
    found = tuple(str(i).strip().lower() for i in ids if isinstance(i, str) and i.strip())
    return found if found or conversation.get("group") is True else None


def _contact(sender: dict[str, Any]) -> dict[str, Any]:
    return {k: sender[k] for k in _CONTACT_FIELDS if isinstance(sender.get(k), str | int)}


def _assignee(conversation: dict[str, Any]) -> str | None:
    """The conversation's assignee (``meta.assignee``: a user, an agent bot, nobody), as
    ``app.conversation.ownership.assignee_of`` keeps it; None when the payload does not say."""
    meta = conversation.get("meta")
    if not isinstance(meta, dict) or "assignee" not in meta:
        return None
    return assignee_of(meta["assignee"])


def _changed(body: dict[str, Any]) -> set[str]:
    """The attributes a conversation event's ``changed_attributes`` name
    (``[{"status": {"previous_value": …, "current_value": …}}, …]``)."""
    changes = body.get("changed_attributes")
    if not isinstance(changes, list):
        return set()
    return {str(name) for change in changes if isinstance(change, dict) for name in change}


def _message(body: dict[str, Any], received_at: float) -> StoredMessage | Ignored:
    conversation = _dict(body.get("conversation"))
    if "id" not in conversation or "id" not in body:
        raise InvalidPayload("message_created without conversation.id or id")
    conversation_id = str(_int(conversation["id"], "conversation.id"))
    message_id = _int(body["id"], "id")
    status = conversation.get("status") if isinstance(conversation.get("status"), str) else None
    inbox_id = _inbox_id(body, conversation)
    assignee = _assignee(conversation)
    message_type = body.get("message_type")
    sender = _dict(body.get("sender"))
    content = encodable(body.get("content")) if isinstance(body.get("content"), str) else ""
    public = body.get("private") is not True

    # An outgoing message the contact sees (an automation's, a template, Captain's; the
    # gateway's own replies note their turn when posted) makes the contact's next one an answer.
    turn = message_type in ("outgoing", "template") and public and sender.get("type") != "agent_bot"

    def ignored(reason: str) -> Ignored:
        return Ignored(reason, conversation_id, status, inbox_id, assignee, turn)

    if message_type == "outgoing" and public and body.get("sender") is None:
        if _dict(body.get("content_attributes")).get("external_echo") is True:
            return AgentReply(conversation_id, message_id, content, status, inbox_id, True, assignee)
        return ignored("automation message (no sender, not a phone echo)")
    if message_type == "outgoing" and public and sender.get("type") == "user":
        return AgentReply(conversation_id, message_id, content, status, inbox_id, False, assignee)
    if message_type != "incoming":
        return ignored(f"message_type is {message_type!r}, not incoming")
    if not public:
        return ignored("private note")
    if sender.get("type") in BOT_SENDER_TYPES:
        return ignored(f"sent by {sender['type']}")
    attachments = _attachments(body.get("attachments"))
    if not content.strip() and not attachments:
        return ignored("empty message")
    account = _dict(body.get("account"))
    account_id = _int(account.get("id", conversation.get("account_id")), "account.id")
    return StoredMessage(
        id=message_id,
        conversation_id=conversation_id,
        account_id=account_id,
        content=_capped(content),
        received_at=received_at,
        created_at=_timestamp(body.get("created_at")),
        inbox_id=inbox_id,
        attachments=attachments,
        contact=_contact(sender),
        conversation_status=status,
        labels=_labels(conversation),
        group=_group(conversation, sender),
        assignee=assignee,
    )


def _conversation_event(event: str, body: dict[str, Any]) -> StatusChange | None:
    """A conversation event (``STATUS_EVENTS``, ``Conversation#webhook_data``) as what it
    says of the conversation; None when it carries no status."""
    status = body.get("status")
    conversation_id = body.get("id")
    if not isinstance(status, str) or conversation_id is None:
        return None
    changed = _changed(body)
    explicit = event != "conversation_updated" or "status" in changed
    return StatusChange(
        str(_int(conversation_id, "id")),
        status[:32],
        explicit,
        _optional_int(body.get("inbox_id")),
        _labels(body),
        _assignee(body),
        bool(changed & set(ASSIGNEE_ATTRIBUTES)),
    )


Parsed = StoredMessage | StatusChange | AgentReply | MessageUpdate | Ignored


def _update(body: dict[str, Any], received_at: float) -> MessageUpdate | Ignored:
    """``message_updated``: the same ``Message#webhook_data`` as ``message_created``."""
    found = _message(body, received_at)
    if isinstance(found, StoredMessage):
        return MessageUpdate(found, _dict(body.get("content_attributes")).get("deleted") is True)
    if isinstance(found, AgentReply):  # an agent edited or deleted a reply: no new takeover
        return Ignored(
            "an agent's message was updated",
            found.conversation_id,
            found.status,
            found.inbox_id,
            found.assignee,
        )
    return found


def parse_webhook(body: Any, received_at: float) -> Parsed:
    """Classify a decoded webhook body; raise ``InvalidPayload`` when unusable."""
    if not isinstance(body, dict):
        raise InvalidPayload("body must be a JSON object")
    event = body.get("event")
    if event == "message_created":
        return _message(body, received_at)
    if event == "message_updated":
        return _update(body, received_at)
    if event in STATUS_EVENTS:
        found = _conversation_event(event, body)
        if found is not None:
            return found
    return Ignored(f"event {str(event)[:64]!r} is not for the bot")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_body(body: bytes) -> Any:
    """The webhook's JSON, with every lone UTF-16 surrogate (a ``\\ud83d`` escape
    without its pair: an emoji cut in half) replaced by U+FFFD wherever it is, so no
    field of it can fail to encode later (a key, a status, a name, the content).
    Only a body holding a surrogate escape is walked."""
    data = json.loads(body)
    return _without_lone_surrogates(data) if _SURROGATE_ESCAPE.search(body) else data


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {encodable(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value
