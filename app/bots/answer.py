"""What a bot answers: ``BotReply`` (what every backend returns), the ``Bot`` protocol,
and the answer format the ``http`` and ``python`` backends share
(``parse_bot_answer``): ``{"replies": ["...", ...]}`` or ``{"reply": "..."}``,
optional ``"handoff": true`` and, with it, ``"team": <Chatwoot team id>`` and
``"note": "<private note>"``. A reply may be an object instead of a string:
``{"content": "...", "choices": ["...", {"title": "...", "value": "..."}],
"media": ["https://..."]}`` (README, "The bot contract"). And ``described``: a
request's attachments as text, for the backends that read text only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from app.chatwoot.messages import Attachment
from app.chatwoot.replies import MAX_CHOICE_CHARS, MAX_CHOICES, MAX_MEDIA, Part, Rich
from app.errors import BotError

__all__ = ["Bot", "BotReply", "KeepsTurns", "described", "parse_bot_answer"]


@dataclass(frozen=True)
class BotReply:
    replies: tuple[Part, ...]
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
        if not isinstance(answer["replies"], list):
            raise BotError("bot answer 'replies' must be a list of strings or reply objects")
        replies = [_reply(r, "replies[]") for r in answer["replies"]]
    elif "reply" in answer:
        replies = [_reply(answer["reply"], "reply")]
    elif handoff:
        replies = []
    else:
        raise BotError("bot answer has neither 'reply' nor 'replies'")
    cleaned = tuple(r for r in replies if isinstance(r, Rich) or r.strip())
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


def _reply(raw: Any, where: str) -> Part:
    """A reply: a string, or ``{"content", "choices", "media"}`` (each optional, not all empty)."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, dict):
        raise BotError(f"bot answer '{where}' must be a string or an object")
    content = raw.get("content", "")
    if not isinstance(content, str):
        raise BotError(f"bot answer '{where}.content' must be a string")
    choices = tuple(_choice(c, where) for c in _list(raw, "choices", where))
    if len(choices) > MAX_CHOICES:
        raise BotError(
            f"bot answer '{where}.choices' holds {len(choices)}: WhatsApp shows at most {MAX_CHOICES}"
        )
    media = tuple(_media(m, where) for m in _list(raw, "media", where))
    if len(media) > MAX_MEDIA:
        raise BotError(f"bot answer '{where}.media' holds {len(media)}: at most {MAX_MEDIA}")
    if not content.strip() and not media:
        raise BotError(f"bot answer '{where}' has neither content nor media")
    if choices and media:
        raise BotError(f"bot answer '{where}' has choices and media: WhatsApp sends choices with text only")
    return Rich(content, choices, media)


def _list(raw: dict[str, Any], name: str, where: str) -> list[Any]:
    value = raw.get(name, [])
    if not isinstance(value, list):
        raise BotError(f"bot answer '{where}.{name}' must be a list")
    return value


def _choice(raw: Any, where: str) -> tuple[str, str]:
    title, value = (raw, raw) if isinstance(raw, str) else (_get(raw, "title"), _get(raw, "value"))
    if not isinstance(title, str) or not isinstance(value, str) or not title.strip() or not value.strip():
        raise BotError(f"bot answer '{where}.choices[]' must be a string or {{'title', 'value'}} strings")
    if len(title) > MAX_CHOICE_CHARS:
        raise BotError(
            f"bot answer choice {title[:40]!r} is over {MAX_CHOICE_CHARS} characters (WhatsApp's limit)"
        )
    return title.strip(), value.strip()[:200]


def _get(raw: Any, name: str) -> Any:
    return raw.get(name) if isinstance(raw, dict) else None


def _media(raw: Any, where: str) -> str:
    parsed = urlparse(raw) if isinstance(raw, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname or len(raw) > 2048:
        raise BotError(f"bot answer '{where}.media[]' must be http(s) URLs")
    return raw
