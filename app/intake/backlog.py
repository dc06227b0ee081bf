"""The spool's side of a webhook: an event as the local spool keeps it (``to_entry``,
``from_entry``), and the mover that applies spooled events through ``handle`` once
Redis answers again (``start_moving``), in order, each placed by its message id."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol

import redis

from app.chatwoot.messages import AgentReply, Ignored, MessageUpdate, StatusChange, StoredMessage
from app.intake.accept import Parsed, Serving, handle
from app.intake.spool import Spool
from app.metrics import SPOOLED

__all__ = ["from_entry", "start_moving", "to_entry"]

log = logging.getLogger(__name__)
_KINDS: dict[str, type] = {"status": StatusChange, "agent_reply": AgentReply, "ignored": Ignored}


class Spooling(Serving, Protocol):
    spool: Spool


def to_entry(company: str, parsed: Parsed, delivery: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"company": company, "delivery": delivery}
    if isinstance(parsed, StoredMessage):  # the assignee too: who holds the conversation is observed
        # and the channel: a WhatsApp conversation's window is noted when the message moves in
        message = parsed.to_json()
        return {
            **entry,
            "kind": "message",
            "message": message,
            "assignee": parsed.assignee,
            "channel": parsed.channel,
        }
    if isinstance(parsed, MessageUpdate):
        message = parsed.message
        return {
            **entry,
            "kind": "update",
            "message": message.to_json(),
            "assignee": message.assignee,
            "deleted": parsed.deleted,
        }
    kind = next(name for name, cls in _KINDS.items() if isinstance(parsed, cls))
    return {**entry, "kind": kind, "event": dataclasses.asdict(parsed)}


def from_entry(entry: dict[str, Any]) -> Parsed:
    if entry["kind"] in ("message", "update"):
        message = dataclasses.replace(
            StoredMessage.from_json(entry["message"]),
            assignee=entry.get("assignee"),
            channel=entry.get("channel"),
        )
        return message if entry["kind"] == "message" else MessageUpdate(message, bool(entry.get("deleted")))
    return _KINDS[entry["kind"]](**entry["event"])


def start_moving(gateway: Spooling) -> None:
    """Start the thread that moves the spool into Redis once Redis answers."""

    def ready() -> bool:
        try:
            return bool(gateway.redis.ping())
        except redis.RedisError:
            return False

    def deliver(entry: dict[str, Any]) -> None:
        config = gateway.settings.company(entry.get("company", ""))
        if config is None:
            log.error("spooled event of an unknown company dropped company=%s", entry.get("company"))
            return
        handle(gateway, config, from_entry(entry), entry.get("delivery"), ordered=True)
        SPOOLED.dec()

    gateway.spool.start_mover(ready, deliver)
