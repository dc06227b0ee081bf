"""What the bot may be told of a conversation beyond its messages (BOT_CONTEXT), read
from the ``message_created`` payload as Chatwoot serializes it (``Message#webhook_data``
with ``Conversations::EventDataPresenter#push_data`` as its ``conversation``):

* ``labels`` — ``conversation.labels``;
* ``conversation_attributes`` — ``conversation.custom_attributes``;
* ``contact_attributes`` — the sender's ``custom_attributes`` (``Contact#webhook_data``),
  else ``conversation.meta.sender``'s;
* ``referral`` — ``content_attributes.referral``: the click-to-WhatsApp ad the contact
  came from (WhatsApp Cloud's ``source_url``, ``source_id``, ``source_type``,
  ``headline``, ``body``, ``media_type``, ``ctwa_clid``, …);
* ``inbox`` — ``inbox{id, name}`` and ``conversation.channel`` (``Channel::Whatsapp``);
* ``assignee`` — ``conversation.meta.assignee`` (a user or an agent bot) as ``{id, name,
  type}``; ``team`` — ``conversation.meta.team`` as ``{id, name}``;
* ``quoted`` — per message: ``content_attributes.in_reply_to`` (the quoted message's
  Chatwoot id) and ``in_reply_to_external_id`` (its WhatsApp id); its text is added when
  the batch is answered, if the gateway has it (``app.drain.quoted``).

Read only for a company (or inbox) that selects parts: with BOT_CONTEXT empty the
webhook reads and stores nothing more. Values are capped (``MAX_ATTRIBUTES`` names,
``MAX_VALUE_CHARS`` characters), whatever a payload carries.
"""

from __future__ import annotations

import json
from typing import Any

from app.chatwoot.body import mapping, optional_integer
from app.chatwoot.replies import encodable
from app.settings import ContextPart

__all__ = ["MAX_ATTRIBUTES", "MAX_VALUE_CHARS", "QUOTE", "read_context"]

MAX_ATTRIBUTES = 50
MAX_VALUE_CHARS = 500
MAX_NAME_CHARS = 64
MAX_LABELS = 50
QUOTE = "in_reply_to"  # the message's own part of its context: what it quotes


def _text(value: Any) -> str:
    return encodable(value)[:MAX_VALUE_CHARS]


def _value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _text(value)
    return _text(json.dumps(value, ensure_ascii=False, default=str))  # a list, a nested object


def _attributes(raw: Any) -> dict[str, Any]:
    """Custom attributes (or a referral) as ``{name: scalar}``, capped."""
    if not isinstance(raw, dict):
        return {}
    found: dict[str, Any] = {}
    for name, value in raw.items():
        if len(found) == MAX_ATTRIBUTES:
            break
        if isinstance(name, str) and name.strip():
            found[_text(name)[:MAX_NAME_CHARS]] = _value(value)
    return found


def _entity(raw: Any, *fields: str) -> dict[str, Any] | None:
    """An assignee or a team (``push_event_data``) as the fields named, or None."""
    if not isinstance(raw, dict):
        return None
    return {name: _value(raw.get(name)) for name in fields if name in raw}


def _quote(attributes: dict[str, Any]) -> dict[str, Any] | None:
    quoted_id = optional_integer(attributes.get("in_reply_to"))
    external = attributes.get("in_reply_to_external_id")
    if quoted_id is None and not isinstance(external, str):
        return None
    quote: dict[str, Any] = {"id": quoted_id}
    if isinstance(external, str):
        quote["external_id"] = _text(external)
    return quote


def read_context(body: dict[str, Any], parts: tuple[ContextPart, ...]) -> dict[str, Any]:
    """The selected ``parts`` of a ``message_created`` body; a part the payload does not
    carry is left out (``assignee`` and ``team`` are null when nobody is assigned)."""
    conversation = mapping(body.get("conversation"))
    meta = mapping(conversation.get("meta"))
    found: dict[str, Any] = {}
    for part in parts:
        if part is ContextPart.LABELS and isinstance(conversation.get("labels"), list):
            labels = [_text(str(label)) for label in conversation["labels"] if isinstance(label, str | int)]
            found["labels"] = labels[:MAX_LABELS]
        elif part is ContextPart.CONVERSATION_ATTRIBUTES and "custom_attributes" in conversation:
            found["conversation_attributes"] = _attributes(conversation["custom_attributes"])
        elif part is ContextPart.CONTACT_ATTRIBUTES:
            sender = mapping(body.get("sender"))
            raw = sender.get("custom_attributes", mapping(meta.get("sender")).get("custom_attributes"))
            if raw is not None:
                found["contact_attributes"] = _attributes(raw)
        elif part is ContextPart.REFERRAL:
            referral = _attributes(mapping(body.get("content_attributes")).get("referral"))
            if referral:
                found["referral"] = referral
        elif part is ContextPart.INBOX:
            inbox = mapping(body.get("inbox"))
            found["inbox"] = {
                "id": optional_integer(inbox.get("id", conversation.get("inbox_id"))),
                "name": _value(inbox.get("name")),
                "channel": _value(conversation.get("channel")),
            }
        elif part is ContextPart.ASSIGNEE and "assignee" in meta:
            found["assignee"] = _entity(meta["assignee"], "id", "name", "type")
        elif part is ContextPart.TEAM and "team" in meta:
            found["team"] = _entity(meta["team"], "id", "name")
        elif part is ContextPart.QUOTED:
            quote = _quote(mapping(body.get("content_attributes")))
            if quote:
                found[QUOTE] = quote
    return found
