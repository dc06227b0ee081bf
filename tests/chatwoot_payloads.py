"""Chatwoot webhook payloads as Chatwoot 4.12-4.15 serializes them.

Built from Chatwoot's own code, not from what seems plausible:

* ``message_created``: ``app/models/message.rb#webhook_data`` — top level
  ``account, additional_attributes, content_attributes, content_type, content,
  conversation, created_at`` (an ISO-8601 string: a Ruby time serialized to
  JSON), ``id, inbox{id, name}, message_type`` (a string), ``private, sender,
  source_id``, ``attachments`` only when present, and ``event``. Agent bots get
  the same body (``app/listeners/agent_bot_listener.rb``).
* ``sender``: a contact's ``webhook_data`` (``app/models/contact.rb``) has no
  ``type`` key; a user's (``app/models/user.rb``) is ``{id, name, email, type:
  "user"}``; an agent bot's ``{id, name, type: "agent_bot"}``; automation
  messages and WhatsApp echoes have ``sender: null``
  (``Whatsapp::IncomingMessageBaseService``: ``sender: outgoing_echo ? nil : @contact``).
* ``conversation``: ``Conversations::EventDataPresenter#push_data`` plus the
  account id; ``messages[]`` are ``Message#push_event_data`` (integer
  ``message_type``, integer ``created_at``); ``meta.sender`` is the contact's
  ``push_event_data``, which does carry ``type: "contact"``.
* Attachments: ``app/models/attachment.rb#push_event_data`` — files and images
  ``data_url/thumb_url``; locations ``coordinates_lat/_long, fallback_title``
  and ``data_url`` (often null); contact cards the phone in ``fallback_title``
  and ``meta`` ``{firstName, lastName}`` (``attach_contact`` of the WhatsApp
  services); audio may carry ``transcribed_text``.
* ``conversation_status_changed`` / ``conversation_updated``: the
  conversation's ``webhook_data`` with ``changed_attributes`` and ``event``
  (``lib/webhooks/trigger.rb``, ``app/listeners/webhook_listener.rb``,
  ``app/listeners/agent_bot_listener.rb``); ``changed_attributes`` is
  ``BaseListener#extract_changed_attributes``: ``[{attr: {previous_value,
  current_value}}, …]`` of the model's ``previous_changes`` (for
  ``conversation_status_changed`` only ``status``). ``conversation_opened`` and
  ``conversation_resolved`` carry the ``webhook_data`` and ``event`` alone. An
  agent's reply in an Agent Bot inbox leaves the conversation ``pending`` and is
  followed by ``conversation_updated`` with status ``pending``.
* ``meta.assignee`` is ``Conversation#assigned_entity`` (``assignee_agent_bot ||
  assignee``) as push data: a user's ``{id, name, available_name, avatar_url,
  type: "user", availability_status, thumbnail}``, an agent bot's ``{id, name,
  avatar_url, type: "agent_bot"}``, or null; ``meta.assignee_type`` "User",
  "AgentBot" or null (``Conversations::EventDataPresenter#push_meta``).
  ``Conversations::AssignmentService``: assigning a user to a pending conversation
  the bot owns opens it and clears the bot (the dashboard's "Take over");
  assigning the agent bot clears the user and sets ``pending``.
"""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(9000)

ACCOUNT = {"id": 1, "name": "Clinic"}
INBOX = {"id": 4, "name": "WhatsApp"}
# Contact#webhook_data: no "type" key.
CONTACT = {
    "account": ACCOUNT,
    "additional_attributes": {},
    "avatar": "",
    "custom_attributes": {},
    "email": None,
    "id": 301,
    "identifier": None,
    "name": "Maria Souza",
    "phone_number": "+5511999990000",
    "thumbnail": "",
    "blocked": False,
}
# Contact#push_event_data (what conversation.meta.sender holds): it does say "contact".
CONTACT_PUSH = {
    "additional_attributes": {},
    "custom_attributes": {},
    "email": None,
    "id": 301,
    "identifier": None,
    "name": "Maria Souza",
    "phone_number": "+5511999990000",
    "thumbnail": "",
    "blocked": False,
    "type": "contact",
}
AGENT = {"id": 7, "name": "Ana (agent)", "email": "ana@example.com", "type": "user"}  # User#webhook_data
AGENT_BOT = {"id": 3, "name": "Gateway bot", "type": "agent_bot"}  # AgentBot#webhook_data
# User#push_event_data and AgentBot#push_event_data: what meta.assignee holds.
AGENT_PUSH = {
    "id": 7,
    "name": "Ana (agent)",
    "available_name": "Ana",
    "avatar_url": "",
    "type": "user",
    "availability_status": "online",
    "thumbnail": "",
}
AGENT_BOT_PUSH = {"id": 3, "name": "Gateway bot", "avatar_url": "", "type": "agent_bot"}
_ASSIGNEE_TYPES = {"user": "User", "agent_bot": "AgentBot"}
CREATED_AT = "2026-11-24T10:00:00.000Z"
CREATED_AT_UNIX = 1795514400


TEAM_PUSH = {"id": 2, "name": "vendas"}  # Team#push_event_data (Chatwoot keeps team names lower case)


def conversation(
    conversation_id: int,
    status: str = "pending",
    inbox_id: int = 4,
    assignee: dict[str, Any] | None = None,
    *,
    labels: list[str] | None = None,
    custom_attributes: dict[str, Any] | None = None,
    team: dict[str, Any] | None = None,
    contact_attributes: dict[str, Any] | None = None,
    channel: str = "Channel::Whatsapp",
) -> dict[str, Any]:
    """Conversation#webhook_data (EventDataPresenter#push_data + account_id)."""
    sender = {**CONTACT_PUSH, "custom_attributes": contact_attributes or {}}
    return {
        "additional_attributes": {},
        "can_reply": True,
        "channel": channel,
        "contact_inbox": {"id": 88, "contact_id": 301, "inbox_id": inbox_id, "source_id": "5511999990000"},
        "id": conversation_id,
        "inbox_id": inbox_id,
        "messages": [],
        "labels": labels or [],
        "meta": {
            "sender": sender,
            "assignee": assignee,
            "assignee_type": _ASSIGNEE_TYPES.get(assignee["type"]) if assignee else None,
            "team": team,
            "hmac_verified": False,
        },
        "status": status,
        "custom_attributes": custom_attributes or {},
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
        "account_id": 1,
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
    content_attributes: dict[str, Any] | None = None,
    inbox_id: int = 4,
    assignee: dict[str, Any] | None = None,
    **conversation_state: Any,
) -> dict[str, Any]:
    """Message#webhook_data with the event name. ``conversation_state``: the
    conversation's labels, custom_attributes, team and contact_attributes (the contact's
    custom attributes, in ``sender`` and ``meta.sender`` alike)."""
    contact_attributes = conversation_state.get("contact_attributes")
    if sender is CONTACT and contact_attributes:
        sender = {**CONTACT, "custom_attributes": contact_attributes}
    body: dict[str, Any] = {
        "account": ACCOUNT,
        "additional_attributes": {},
        "content_attributes": content_attributes or {},
        "content_type": "text",
        "content": content,
        "conversation": conversation(conversation_id, status, inbox_id, assignee, **conversation_state),
        "created_at": CREATED_AT,
        "id": message_id if message_id is not None else next(_ids),
        "inbox": {"id": inbox_id, "name": INBOX["name"] if inbox_id == 4 else f"Inbox {inbox_id}"},
        "message_type": message_type,
        "private": private,
        "sender": sender,
        "source_id": "wamid.HBgLNTUxMTk5OTk5MDAwMBUCABIYFjNFQjA",
        "event": "message_created",
    }
    if attachments:
        body["attachments"] = attachments
    return body


def _attachment(file_type: str, **fields: Any) -> dict[str, Any]:
    return {"id": next(_ids), "message_id": 0, "file_type": file_type, "account_id": 1, **fields}


def image_with_caption(caption: str, conversation_id: int = 42) -> dict[str, Any]:
    return message(
        caption,
        conversation_id,
        attachments=[
            _attachment(
                "image",
                extension=None,
                data_url="https://chatwoot.example/rails/active_storage/blobs/photo.jpg",
                thumb_url="https://chatwoot.example/rails/active_storage/blobs/photo_thumb.jpg",
                file_size=48213,
                width=1080,
                height=1440,
            )
        ],
    )


def location(title: str, lat: float, long: float, conversation_id: int = 42) -> dict[str, Any]:
    """A WhatsApp location: no content, coordinates and a title, data_url often null."""
    return message(
        None,
        conversation_id,
        attachments=[
            _attachment(
                "location", coordinates_lat=lat, coordinates_long=long, fallback_title=title, data_url=None
            )
        ],
    )


def contact_card(first: str, last: str, phone: str, conversation_id: int = 42) -> dict[str, Any]:
    """A shared contact: the phone number in fallback_title, the name in meta, no URL."""
    return message(
        None,
        conversation_id,
        attachments=[
            _attachment("contact", fallback_title=phone, meta={"firstName": first, "lastName": last})
        ],
    )


def audio(transcript: str | None, conversation_id: int = 42) -> dict[str, Any]:
    """A voice note; Chatwoot adds transcribed_text when it transcribed it."""
    fields: dict[str, Any] = {
        "extension": None,
        "data_url": "https://chatwoot.example/rails/active_storage/blobs/voice.ogg",
        "thumb_url": "",
        "file_size": 9120,
        "width": None,
        "height": None,
    }
    if transcript is not None:
        fields["transcribed_text"] = transcript
    return message(None, conversation_id, attachments=[_attachment("audio", **fields)])


def document(
    caption: str | None, data_url: str, conversation_id: int = 42, file_size: int = 48213
) -> dict[str, Any]:
    """A file (a PDF, a spreadsheet): Attachment#push_event_data with file_type "file", its
    caption as the message's content."""
    fields = {"extension": None, "data_url": data_url, "thumb_url": "", "file_size": file_size}
    return message(
        caption, conversation_id, attachments=[_attachment("file", **fields, width=None, height=None)]
    )


def agent_reply(content: str, conversation_id: int = 42, status: str = "pending") -> dict[str, Any]:
    """An agent's public reply. In an Agent Bot inbox the conversation stays pending."""
    return message(content, conversation_id, message_type="outgoing", sender=AGENT, status=status)


def phone_echo(content: str, conversation_id: int = 42, status: str = "pending") -> dict[str, Any]:
    """An agent answering from the WhatsApp Business phone app: outgoing, no sender."""
    return message(
        content,
        conversation_id,
        message_type="outgoing",
        sender=None,
        status=status,
        content_attributes={"external_echo": True},
    )


def automation_message(content: str, conversation_id: int = 42, status: str = "pending") -> dict[str, Any]:
    """An automation rule's message: outgoing, no sender, not an echo: no human."""
    return message(content, conversation_id, message_type="outgoing", sender=None, status=status)


def private_note(content: str, conversation_id: int = 42) -> dict[str, Any]:
    return message(content, conversation_id, message_type="outgoing", private=True, sender=AGENT)


def bot_own_reply(content: str, conversation_id: int = 42) -> dict[str, Any]:
    """The agent bot's own reply, which the Agent Bot receives too."""
    return message(content, conversation_id, message_type="outgoing", sender=AGENT_BOT)


def status_changed(
    conversation_id: int, status: str, previous: str = "open", assignee: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = conversation(conversation_id, status, assignee=assignee)
    body["event"] = "conversation_status_changed"
    body["changed_attributes"] = [{"status": {"previous_value": previous, "current_value": status}}]
    return body


def status_event(
    event: str, conversation_id: int, status: str, assignee: dict[str, Any] | None = None
) -> dict[str, Any]:
    """conversation_opened / conversation_resolved: the webhook_data and the event alone."""
    body = conversation(conversation_id, status, assignee=assignee)
    body["event"] = event
    return body


def conversation_updated(
    conversation_id: int,
    status: str = "pending",
    changed: list[dict[str, Any]] | None = None,
    assignee: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """By default what follows an agent's reply (first_reply_created_at, waiting_since
    changed); ``changed``: the changed_attributes of another update."""
    body = conversation(conversation_id, status, assignee=assignee)
    body["event"] = "conversation_updated"
    body["changed_attributes"] = changed or [
        {"first_reply_created_at": {"previous_value": None, "current_value": CREATED_AT}},
        {"waiting_since": {"previous_value": CREATED_AT, "current_value": None}},
    ]
    return body


def changed(attribute: str, previous: Any, current: Any) -> dict[str, Any]:
    """One entry of changed_attributes (BaseListener#extract_changed_attributes)."""
    return {attribute: {"previous_value": previous, "current_value": current}}


def webwidget_triggered() -> dict[str, Any]:
    return {
        "id": 12,
        "contact": CONTACT,
        "inbox": {"id": 5, "name": "Website"},
        "account": ACCOUNT,
        "current_conversation": None,
        "source_id": "b1d2",
        "event": "webwidget_triggered",
        "event_info": {"initiated_at": {"timestamp": "2026-11-24T10:00:00Z"}, "referer": "https://x"},
    }


def message_updated(created: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The same message's Message#webhook_data again, as ``message_updated``, with
    ``changes`` (an edit's content, Chatwoot's transcript in its attachments...)."""
    body = {**created, **changes, "event": "message_updated"}
    return body


def message_deleted(created: dict[str, Any]) -> dict[str, Any]:
    """What a deletion makes of a message (Api::V1::Accounts::Conversations::MessagesController
    #destroy): its content replaced, content_type text, content_attributes {deleted: true},
    its attachments destroyed."""
    body = {
        **created,
        "content": "This message was deleted",
        "content_type": "text",
        "content_attributes": {"deleted": True},
        "event": "message_updated",
    }
    body.pop("attachments", None)
    return body
