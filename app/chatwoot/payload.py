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
from typing import Any

from app.chatwoot.body import decode_body, integer, mapping, number, optional_integer, timestamp
from app.chatwoot.messages import (
    AgentReply,
    Attachment,
    Ignored,
    InvalidPayload,
    MessageUpdate,
    StatusChange,
    StoredMessage,
)
from app.chatwoot.replies import encodable
from app.conversation.ownership import assignee_of

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_CONTENT_CHARS",
    "Parsed",
    "decode_body",
    "parse_webhook",
]  # decode_body: app.chatwoot.body

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


def _attachment(item: dict[str, Any]) -> Attachment:
    values: dict[str, Any] = {k: item.get(k) for k in _ATTACHMENT_TEXT_FIELDS}
    values = {k: v if isinstance(v, str) and v else None for k, v in values.items()}
    meta = mapping(item.get("meta"))
    if values["transcribed_text"] is None and isinstance(meta.get("transcribed_text"), str):
        values["transcribed_text"] = meta["transcribed_text"] or None
    card = {k: meta[k] for k in _CARD_NAME_FIELDS if isinstance(meta.get(k), str) and meta[k]}
    return Attachment(
        **values,
        coordinates_lat=number(item.get("coordinates_lat")),
        coordinates_long=number(item.get("coordinates_long")),
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


def _inbox_id(body: dict[str, Any], conversation: dict[str, Any]) -> int | None:
    found = optional_integer(mapping(body.get("inbox")).get("id"))
    return found if found is not None else optional_integer(conversation.get("inbox_id"))


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
    conversation = mapping(body.get("conversation"))
    if "id" not in conversation or "id" not in body:
        raise InvalidPayload("message_created without conversation.id or id")
    conversation_id = str(integer(conversation["id"], "conversation.id"))
    message_id = integer(body["id"], "id")
    status = conversation.get("status") if isinstance(conversation.get("status"), str) else None
    inbox_id = _inbox_id(body, conversation)
    assignee = _assignee(conversation)
    message_type = body.get("message_type")
    sender = mapping(body.get("sender"))
    content = encodable(body.get("content")) if isinstance(body.get("content"), str) else ""
    public = body.get("private") is not True

    # An outgoing message the contact sees (an automation's, a template, Captain's; the
    # gateway's own replies note their turn when posted) makes the contact's next one an answer.
    turn = message_type in ("outgoing", "template") and public and sender.get("type") != "agent_bot"

    def ignored(reason: str) -> Ignored:
        return Ignored(reason, conversation_id, status, inbox_id, assignee, turn)

    if message_type == "outgoing" and public and body.get("sender") is None:
        if mapping(body.get("content_attributes")).get("external_echo") is True:
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
    account = mapping(body.get("account"))
    account_id = integer(account.get("id", conversation.get("account_id")), "account.id")
    return StoredMessage(
        id=message_id,
        conversation_id=conversation_id,
        account_id=account_id,
        content=_capped(content),
        received_at=received_at,
        created_at=timestamp(body.get("created_at")),
        inbox_id=inbox_id,
        attachments=attachments,
        contact=_contact(sender),
        conversation_status=status,
        labels=_labels(conversation),
        group=_group(conversation, sender),
        channel=conversation.get("channel") if isinstance(conversation.get("channel"), str) else None,
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
        str(integer(conversation_id, "id")),
        status[:32],
        explicit,
        optional_integer(body.get("inbox_id")),
        _labels(body),
        _assignee(body),
        bool(changed & set(ASSIGNEE_ATTRIBUTES)),
    )


Parsed = StoredMessage | StatusChange | AgentReply | MessageUpdate | Ignored


def _update(body: dict[str, Any], received_at: float) -> MessageUpdate | Ignored:
    """``message_updated``: the same ``Message#webhook_data`` as ``message_created``."""
    found = _message(body, received_at)
    if isinstance(found, StoredMessage):
        return MessageUpdate(found, mapping(body.get("content_attributes")).get("deleted") is True)
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
