"""The batching rules: when a batch closes, what is joined, and how.

* A batch closes ``window`` seconds after its latest fragment or ``max_wait``
  seconds after its first, whichever comes first (``close_at``).
* A burst is one bot call (``segments``): its texts, the captions of its images
  and what its other attachments carry (a voice note's transcript, a location)
  joined in arrival order, its images together (a WhatsApp album with its
  captions is one call). Only long writing splits it: when the texts average
  ``max_avg_chars`` or more, each message goes to the bot on its own.
* Joining (``join_fragments``) follows how people type: short fragments read as
  one sentence (space), medium ones as lines (newline), long ones as paragraphs
  (blank line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.chatwoot.messages import StoredMessage
from app.settings import WindowMode

__all__ = ["MEDIUM_CHARS", "SHORT_CHARS", "Segment", "close_at", "due_at", "join_fragments", "segments"]

SHORT_CHARS = 40
MEDIUM_CHARS = 200


def close_at(first_at: float, last_at: float, window: float, max_wait: float) -> float:
    """When a batch whose fragments arrived at ``first_at``..``last_at`` closes."""
    return min(last_at + window, first_at + max_wait)


def due_at(mode: str, first_at: float, last_at: float, window: float, max_wait: float) -> float:
    """When a batch is due, by ``BATCH_WINDOW_MODE``: ``fixed`` counts the window from the
    first fragment; ``sliding``, ``learned`` and ``smart`` (whose ``window`` is the
    contact's own) from the latest, capped by the max wait. The ENQUEUE script applies the same rule
    when it schedules a batch (``app/store/scripts/``)."""
    if mode == WindowMode.FIXED:
        return first_at + window
    return close_at(first_at, last_at, window, max_wait)


def join_fragments(texts: Sequence[str]) -> str:
    """Join fragments into one text, choosing the separator by their length."""
    parts = [t.strip() for t in texts if t and t.strip()]
    if not parts:
        return ""
    average = sum(len(p) for p in parts) / len(parts)
    if average < SHORT_CHARS:
        separator = " "
    elif average < MEDIUM_CHARS:
        separator = "\n"
    else:
        separator = "\n\n"
    return separator.join(parts)


@dataclass(frozen=True)
class Segment:
    """Messages that go to the bot in one call."""

    messages: tuple[StoredMessage, ...]
    batched: bool

    @property
    def text(self) -> str:
        if self.batched:
            return join_fragments([m.bot_text for m in self.messages])
        return self.messages[0].bot_text

    @property
    def key(self) -> str:
        """Stable name of the segment (for sent-part markers)."""
        return f"{self.messages[0].id}-{self.messages[-1].id}"


def _batchable(run: Sequence[StoredMessage], max_avg_chars: int) -> bool:
    """Short writing: the texts (an image's caption counts, a bare image does not)
    average below ``max_avg_chars``."""
    lengths = [len(m.content.strip()) for m in run if m.content.strip()]
    return not lengths or sum(lengths) / len(lengths) < max_avg_chars


def segments(messages: Sequence[StoredMessage], max_avg_chars: int) -> list[Segment]:
    """Split a claimed batch into bot calls, in order: one for the burst, or one per
    message when it is long writing."""
    if len(messages) > 1 and _batchable(messages, max_avg_chars):
        return [Segment(tuple(messages), batched=True)]
    return [Segment((m,), batched=False) for m in messages]
