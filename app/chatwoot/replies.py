"""Shaping a bot reply into the messages a contact receives.

* ``REPLY_SPLIT=paragraphs`` sends blank-line-separated paragraphs as separate
  messages, in order, each preceded by a typing pause proportional to its
  length (``TYPING_CHARS_PER_SECOND``, clamped to 1 to 8 s), so the bot reads
  like one person typing.
* Whatever the mode, a part longer than WhatsApp's 4,096-character limit is
  split at the last sentence end before the limit (else the last space).
"""

from __future__ import annotations

import re

__all__ = ["WHATSAPP_MAX_CHARS", "encodable", "reply_parts", "split_long", "split_reply", "typing_pause"]

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


def reply_parts(replies: tuple[str, ...] | list[str], mode: str) -> list[str]:
    """Every message to post for a bot answer, in order, each safe to encode."""
    return [part for reply in replies for part in split_reply(encodable(reply), mode)]


def typing_pause(part: str, chars_per_second: float) -> float:
    """How long to show 'typing' before posting ``part``."""
    return min(MAX_PAUSE_SECONDS, max(MIN_PAUSE_SECONDS, len(part) / chars_per_second))
