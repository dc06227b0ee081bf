"""Shaping a bot reply into the messages a contact receives.

* ``REPLY_SPLIT=paragraphs`` sends blank-line-separated paragraphs as separate
  messages, in order, each preceded by a typing pause proportional to its
  length (``TYPING_CHARS_PER_SECOND``, clamped to 1 to 8 s), so the bot reads
  like one person typing.
* Whatever the mode, a part longer than WhatsApp's 4,096-character limit is
  split at the last sentence end before the limit (else the last space).
* A reply may carry choices (Chatwoot's ``input_select``: WhatsApp shows up to three
  as buttons, more as a list) or media by URL (``Rich``); they go with its last
  message, each further file as a message of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_CHOICES",
    "MAX_CHOICE_CHARS",
    "MAX_MEDIA",
    "WHATSAPP_MAX_CHARS",
    "Part",
    "Rich",
    "Template",
    "encodable",
    "part_from_json",
    "part_text",
    "part_to_json",
    "reply_parts",
    "split_long",
    "split_reply",
    "typing_pause",
]

MAX_CHOICES = 10  # a WhatsApp list's rows
MAX_CHOICE_CHARS = 24  # a WhatsApp list row's title (a button's: 20)
MAX_MEDIA = 5


@dataclass(frozen=True)
class Rich:
    """A message with more than text: ``choices`` ((title, value) pairs, posted as
    ``input_select``) and ``media`` (http(s) URLs, fetched and uploaded with it)."""

    content: str
    choices: tuple[tuple[str, str], ...] = ()
    media: tuple[str, ...] = ()


@dataclass(frozen=True)
class Template:
    """A WhatsApp template message (Chatwoot's ``template_params``): outside the 24-hour
    customer-service window the only kind WhatsApp delivers. ``content`` is what
    Chatwoot's dashboard shows."""

    name: str
    language: str
    category: str
    params: tuple[str, ...]
    content: str

    def template_params(self) -> dict[str, Any]:
        numbered = {str(i + 1): value for i, value in enumerate(self.params)}
        return {
            "name": self.name,
            "category": self.category,
            "language": self.language,
            "processed_params": numbered,
        }


Part = str | Rich | Template  # one message to post


def part_text(part: Part) -> str:
    return part if isinstance(part, str) else part.content


def part_to_json(part: Part) -> Any:
    if isinstance(part, str):
        return part
    if isinstance(part, Template):
        return {"template": [part.name, part.language, part.category, list(part.params), part.content]}
    return {"content": part.content, "choices": [list(c) for c in part.choices], "media": list(part.media)}


def part_from_json(raw: Any) -> Part:
    if isinstance(raw, str):
        return raw
    if "template" in raw:
        name, language, category, params, content = raw["template"]
        return Template(name, language, category, tuple(params), content)
    choices = tuple((str(title), str(value)) for title, value in raw.get("choices") or ())
    return Rich(str(raw.get("content") or ""), choices, tuple(str(url) for url in raw.get("media") or ()))


WHATSAPP_MAX_CHARS = 4096
MIN_PAUSE_SECONDS, MAX_PAUSE_SECONDS = 1.0, 8.0
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"[.!?…](?=\s)|\n")


def split_long(text: str, limit: int = WHATSAPP_MAX_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters, at sentence ends."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= limit]
        cut = ends[-1] if ends else window.rfind(" ")
        if cut <= 0:
            cut = limit  # one unbroken word longer than the limit
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def split_reply(text: str, mode: str) -> list[str]:
    """The messages to post for one bot reply, in order."""
    paragraphs = _PARAGRAPHS.split(text) if mode == "paragraphs" else [text]
    return [piece for paragraph in paragraphs for piece in split_long(paragraph)]


def encodable(text: str) -> str:
    """``text`` with every lone UTF-16 surrogate replaced by U+FFFD.

    A JavaScript bot that cuts an emoji in half sends a lone surrogate as a
    JSON escape (``"\\ud83d"``); Python decodes it into a string that cannot be
    encoded as UTF-8, so it could be neither hashed, stored nor posted. Paired
    surrogates (an emoji written as two escapes) become the character they form.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def reply_parts(replies: tuple[Part, ...] | list[Part], mode: str) -> list[Part]:
    """Every message to post for a bot answer, in order, each safe to encode; a rich
    reply's choices and media go with its last message."""
    parts: list[Part] = []
    for reply in replies:
        pieces = split_reply(encodable(part_text(reply)), mode)
        if isinstance(reply, str):
            parts += pieces
            continue
        *before, last = pieces or [""]
        # Chatwoot sends WhatsApp a message's first attachment only
        # (WhatsappCloudService#send_attachment_message): one message per file, the
        # text as the first one's caption.
        media = [Rich("", (), (url,)) for url in reply.media[1:]]
        parts += [*before, Rich(last, reply.choices, reply.media[:1]), *media]
    return parts


def typing_pause(part: Part, chars_per_second: float) -> float:
    """How long to show 'typing' before posting ``part``."""
    return min(MAX_PAUSE_SECONDS, max(MIN_PAUSE_SECONDS, len(part_text(part)) / chars_per_second))
