"""The smart batching window (``BATCH_WINDOW_MODE=smart``): the learned pace,
read together with what the latest fragment says.

A fixed or learned quiet period only knows *when* people type. What they type
tells more: "hi" or "I wanted to ask" is rarely the end of a burst, "What time
do you open on Saturday?" usually is. The rule, in one screen:

1. ``read`` sorts the latest fragment into one of four readings, by a few
   features a person can check (Portuguese, Spanish and English words):

   =========== ========================================================== =========
   reading     when                                                        weight
   =========== ========================================================== =========
   opening     only greetings / "one question" ("oi", "buenas", "hi")      hold
   unfinished  ends in , : ; ... - or a connective ("and", "para", "que")  hold
               or a verb waiting for its object ("queria saber", "ask")
   complete    ends in ? ! . (not a greeting), only emoji, a thank-you,    close
               laughter ("kkkk", "jaja"), long writing (``LONG_CHARS``+),
               a voice note
   plain       anything else: no final punctuation, an image alone          between
   =========== ========================================================== =========

2. ``smart_window`` turns the reading into the quiet period after that fragment,
   with what the contact's pace says (``app.batching.pace``: *known* is two finished
   bursts remembered; a *one-message writer* is a known contact none of whose
   remembered bursts had a second fragment. Since the pace learns from fragment
   gaps only and every turn ends a burst, a contact's bursts are mostly their
   turns: one fragmented turn among the last ``HISTORY`` is a contact who
   fragments, and their openings are held for the prior):

   * *hold* (unfinished, or an opening from a known fragmenter): what covers
     this contact's slowest gaps, the longest of: the company prior (the window
     that merged 95 % of its same-burst gaps), the contact's learned window, and
     ``MARGIN`` x the longest gap of the burst in progress + ``SLACK``;
   * an opening from a contact with no history: the prior, at most
     ``NEW_OPENING_SECONDS`` (a greeting alone is how many new contacts start,
     and then they wait for an answer);
   * *close* (complete): ``low`` (``BATCH_WINDOW_MIN_SECONDS``), or inside a
     burst that has shown gaps, its pace (a question in the middle of a slow
     burst is often followed by more);
   * plain: ``PLAIN_SECONDS`` for a contact with no history, the learned window
     for a known fragmenter, never below the burst's pace;
   * a one-message writer: ``low`` (or the burst's pace), and ``PLAIN_SECONDS``
     after an opening or an unfinished piece.

   The result is clamped to [``low``, ``high``]; ``BATCH_MAX_WAIT_SECONDS``
   still caps the batch (``app.batching.rules.close_at``).

The simulator (``bench/batching_quality.py``) and the analytics report call
these same functions; docs/performance.md has the figures.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from enum import StrEnum

from app.batching.pace import Pace

__all__ = [
    "LONG_CHARS",
    "NEW_OPENING_SECONDS",
    "PLAIN_SECONDS",
    "Reading",
    "read",
    "read_message",
    "smart_window",
]

LONG_CHARS = 120  # this much writing is a whole message
PLAIN_SECONDS = 6.0  # a plain fragment from a contact with no history
NEW_OPENING_SECONDS = 7.5  # a greeting from a contact with no history (many then wait for an answer)


class Reading(StrEnum):
    OPENING = "opening"
    UNFINISHED = "unfinished"
    PLAIN = "plain"
    COMPLETE = "complete"


def _words(*phrases: str) -> frozenset[str]:
    return frozenset(phrases)


# Greetings and openers: a fragment made only of these says more is coming.
GREETINGS = _words(
    # pt
    "oi", "ola", "olá", "bom dia", "boa tarde", "boa noite", "tudo bem", "tudo bom", "e ai", "e aí",
    "opa", "uma duvida", "uma dúvida", "uma pergunta", "com licença", "por favor",
    # es
    "hola", "buenas", "buenos dias", "buenos días", "buen dia", "buen día", "buenas tardes",
    "buenas noches", "que tal", "qué tal", "una consulta", "una pregunta", "disculpe",
    # en
    "hi", "hello", "hey", "hi there", "hello there", "good morning", "good afternoon",
    "good evening", "how are you", "one question", "quick question", "a question", "excuse me",
)  # fmt: skip
# A fragment ending in one of these is unfinished: a connective, a preposition, an
# article, or a verb still waiting for what it asks about.
CONNECTIVES = _words(
    # pt
    "e", "mas", "ou", "porque", "pois", "que", "pra", "para", "com", "de", "do", "da", "no", "na",
    "em", "um", "uma", "o", "a", "os", "as", "se", "também", "tambem", "então", "entao", "tipo",
    "saber", "perguntar", "pedir",
    # es
    "y", "pero", "o", "porque", "que", "para", "con", "de", "del", "el", "la", "los", "las", "un",
    "una", "en", "si", "también", "tambien", "entonces", "preguntar", "consultar",
    # en
    "and", "but", "or", "because", "so", "that", "to", "for", "with", "of", "the", "a", "an", "in",
    "on", "if", "also", "then", "like", "ask", "know", "about",
)  # fmt: skip
THANKS = _words(
    "obrigado", "obrigada", "valeu", "ok", "okay", "blz", "beleza", "perfeito", "certo", "gracias",
    "dale", "perfecto", "listo", "thanks", "thank you", "thx", "perfect", "great", "ok thanks",
    "ok obrigado", "ok gracias",
)  # fmt: skip
UNFINISHED_MARKS = ",:;-\u2013\u2014"  # comma, colon, semicolon, hyphen, en and em dash
COMPLETE_MARKS = "?!.\uff1f\uff01\u3002"  # and the full-width ? ! and the ideographic full stop
_LAUGHTER = re.compile(r"k{2,}|(?:ha|he|ja|je|hi){2,}h?|(?:rs)+|lol")
_WORDS = re.compile(r"[^\W\d_]+|\d+")
_STRETCHED = re.compile(r"(.)\1+$")


def _only_greetings(words: list[str]) -> bool:
    """Made of greeting phrases only; a stretched last letter counts ("oiii", "holaa")."""
    words = [w if w in GREETINGS else _STRETCHED.sub(r"\1", w) for w in words]
    at = 0
    while at < len(words):
        size = next((n for n in (3, 2, 1) if " ".join(words[at : at + n]) in GREETINGS), 0)
        if not size:
            return False
        at += size
    return bool(words)


def read(text: str, attachment: str | None = None) -> Reading:
    """How a fragment reads: is more likely to follow it, or is it a whole message?
    ``attachment`` is the file type of its first attachment, if any."""
    stripped = unicodedata.normalize("NFC", text).strip()
    if not stripped:
        if attachment == "audio":
            return Reading.COMPLETE  # a voice note says its piece whole
        return Reading.PLAIN  # an image alone: a caption or more images often follow
    words = _WORDS.findall(stripped.lower())
    if not words:  # emoji or punctuation only: a reaction, unless it trails off ("...")
        return Reading.UNFINISHED if stripped.endswith(("...", "\u2026")) else Reading.COMPLETE
    if _only_greetings(words):
        return Reading.OPENING
    if all(_LAUGHTER.fullmatch(w) for w in words):
        return Reading.COMPLETE  # "kkkk", "jajaja", "haha", "rsrs": a reaction
    last = stripped[-1]
    if last in UNFINISHED_MARKS or stripped.endswith(("...", "\u2026")):
        return Reading.UNFINISHED
    if words[-1] in CONNECTIVES:
        return Reading.UNFINISHED
    if last in COMPLETE_MARKS or " ".join(words) in THANKS or len(stripped) >= LONG_CHARS:
        return Reading.COMPLETE
    return Reading.PLAIN


def read_message(content: str, attachment_types: Sequence[str]) -> Reading:
    """``read`` for a stored message: its caption or text, and its first attachment."""
    return read(content, attachment_types[0] if attachment_types else None)


def smart_window(
    pace: Pace,
    queued: Iterable[float],
    reading: Reading,
    prior: float,
    low: float,
    high: float,
    turn_at: float | None = None,
) -> float:
    """The quiet period after the latest of the fragments ``queued`` (arrival times),
    which reads ``reading``, for a contact with ``pace``; ``prior`` is the company's
    learned window for a new contact; ``turn_at``: the latest outgoing message to the
    contact (``Pace.observe``)."""
    now = pace.observe(queued, turn_at)
    known, own, burst = now.known, now.own_window, now.burst_window  # 0: no such window
    one_message_writer = known and not any(now.bursts)
    if one_message_writer:  # every burst remembered was one message
        hold = max(PLAIN_SECONDS, burst)  # an opener alone is often all they send
        window = {Reading.OPENING: hold, Reading.UNFINISHED: hold}.get(reading, burst or low)
    elif reading is Reading.COMPLETE:
        window = burst or low
    elif reading is Reading.UNFINISHED or (reading is Reading.OPENING and known):
        window = max(prior, own, burst)
    elif reading is Reading.OPENING:  # from a contact with no history
        window = max(min(prior, NEW_OPENING_SECONDS), burst)
    elif known:
        window = max(own, burst)
    else:
        window = max(PLAIN_SECONDS, burst)
    return min(max(window, low), high)
