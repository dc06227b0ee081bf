"""The gateway's own messages: every message it posts is marked as its own, before
and after the POST, so that Chatwoot's echo of it is never taken for a human
taking over (invariant 11).

With a user access token (the one that can read a conversation back) Chatwoot
sends the gateway's own message back as an outgoing message from a ``user``:
exactly what an agent's reply looks like. The ``AGENT_REPLY`` script tells them
apart by two marks:

* before the POST, the content's digest in
  ``<company>:webhook_own_pending:<conversation>`` (``OWN_PENDING_TTL_SECONDS``):
  the echo may arrive before the POST's answer does;
* after it, ``<company>:webhook_own:<Chatwoot id>`` (``OWN_REPLY_TTL_SECONDS``).

A reply part of a batch (the bot's answer, and the gateway's own words stored
in its place: the fallback, away, budget and handoff messages) gets both in
its ledger scripts, together with its pending and sent marks (``MARK_PART``,
``RECORD_SENT``); a message that belongs to no batch (the session-expired
notice) goes through ``post_own``. Nothing else creates a public message.
"""

from __future__ import annotations

import hashlib

import redis

from app.chatwoot.client import Replier
from app.store import keys

__all__ = ["OWN_PENDING_TTL_SECONDS", "OWN_REPLY_TTL_SECONDS", "content_digest", "post_own"]

OWN_PENDING_TTL_SECONDS = 300
OWN_REPLY_TTL_SECONDS = 24 * 3600


def content_digest(content: str) -> str:
    """Short digest of a message's text, to recognise it when its webhook comes back."""
    return hashlib.sha256(content.strip().encode()).hexdigest()[:24]


def post_own(
    client: redis.Redis, replier: Replier, company: str, account: int, conversation: str, content: str
) -> int | None:
    """Post ``content`` to the contact as the gateway's own message (both marks); the id
    Chatwoot gave it, if it said. Raises ``ChatwootError`` as the replier does."""
    pending = keys.own_pending(company, conversation)
    pipe = client.pipeline(transaction=False)
    pipe.sadd(pending, content_digest(content))
    pipe.expire(pending, OWN_PENDING_TTL_SECONDS)
    pipe.execute()
    message_id = replier.create_message(account, conversation, content)
    if message_id is not None:
        client.set(keys.own_reply(company, message_id), "1", ex=OWN_REPLY_TTL_SECONDS)
    return message_id
