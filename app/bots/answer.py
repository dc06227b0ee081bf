"""What a bot answers: ``BotReply`` (what every backend returns), the ``Bot`` protocol,
and the answer format the ``http`` and ``python`` backends share
(``parse_bot_answer``): ``{"replies": ["...", ...]}`` or ``{"reply": "..."}``,
optional ``"handoff": true`` and, with it, ``"team": <Chatwoot team id>`` and
``"note": "<private note>"``. And ``described``: a request's attachments as text, for
the backends that read text only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from app.chatwoot.messages import Attachment
from app.errors import BotError

__all__ = ["Bot", "BotReply", "KeepsTurns", "described", "parse_bot_answer"]


@dataclass(frozen=True)
class BotReply:
    replies: tuple[str, ...]
    handoff: bool = False
    team: int | None = None  # with a handoff: the Chatwoot team to assign
    note: str = ""  # with a handoff: a private note for the humans (a summary)


class Bot(Protocol):
    def answer(self, request: dict[str, Any]) -> BotReply: ...


@runtime_checkable
class KeepsTurns(Protocol):
    """A bot that keeps the conversation's turns (openai): it is told what the contact
    received, once it was posted, never what it merely answered (an answer superseded
    by newer fragments, or lost with its run, never reached the contact)."""

    def remember(self, conversation: str, answer_id: str, user_text: str, reply: str) -> None: ...


def parse_bot_answer(answer: Any) -> BotReply:
    """Validate an http/python bot answer; raise ``BotError`` naming the problem."""
    if not isinstance(answer, dict):
        raise BotError(f"bot answer must be a JSON object, got {type(answer).__name__}")
    handoff = answer.get("handoff", False)
    if not isinstance(handoff, bool):
        raise BotError("bot answer 'handoff' must be true or false")
    if "replies" in answer:
        replies = answer["replies"]
        if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
            raise BotError("bot answer 'replies' must be a list of strings")
    elif "reply" in answer:
        if not isinstance(answer["reply"], str):
            raise BotError("bot answer 'reply' must be a string")
        replies = [answer["reply"]]
    elif handoff:
        replies = []
    else:
        raise BotError("bot answer has neither 'reply' nor 'replies'")
    cleaned = tuple(r for r in replies if r.strip())
    if not cleaned and replies and not handoff:
        raise BotError("bot answered an empty reply")
    team = answer.get("team")
    if team is not None and (isinstance(team, bool) or not isinstance(team, int) or team <= 0):
        raise BotError("bot answer 'team' must be a positive team id")
    note = answer.get("note", "")
    if not isinstance(note, str):
        raise BotError("bot answer 'note' must be a string")
    return BotReply(cleaned, handoff, team, note.strip())


def described(request: dict[str, Any]) -> list[str]:
    """What the request's attachments carry, as text (a location's title and coordinates,
    a contact card's name and number, a voice note's transcript), in message order."""
    return [Attachment(**a).describe() for m in request["messages"] for a in m["attachments"]]
