"""The learned batching window (``BATCH_WINDOW_MODE=learned``).

A fixed quiet period is a compromise between two kinds of contact: a long one
makes every one-message writer wait for nothing, a short one cuts slow typists'
bursts into several bot calls. The learned window sets the quiet period per
contact from how that contact has typed:

* ``Pace`` is what the gateway remembers of a contact: the longest gap inside
  each of their last ``HISTORY`` bursts (0 for a burst of one message), the
  longest gap of the burst in progress, and the arrival of their latest
  fragment. Gaps up to ``SAME_BURST_SECONDS`` belong to one burst; a longer
  silence starts the next one. It is a few dozen bytes per contact.
* **Only gaps between fragments of one burst teach it** (invariant 12). A gap
  across a *turn* — an outgoing message between the two fragments: the
  gateway's answer, an agent's reply — is the contact answering, never a
  fragment gap: it ends the burst instead, uncounted. Counted, it held the
  gateway's own window plus the bot's time plus the contact's reply, so a
  contact who answered the bot soon after each reply got a longer window every
  turn (3, 6, 10, 16, 26 s). The quiet that closed a batch is not a gap either
  (it is censored: only fragments that did arrive count).
* ``learned_window`` takes the ``QUANTILE`` of those bursts' longest gaps,
  times ``MARGIN`` plus ``SLACK`` (a contact's next gap is rarely exactly the
  longest one seen), and never less than what the burst in progress has
  already shown. A contact with fewer than ``MIN_HISTORY`` finished bursts
  gets the company's prior instead: the window that covered 95 % of the
  company's recorded same-burst gaps (``analytics.window_covering``), or
  ``BATCH_WINDOW_SECONDS`` while fewer than ``PRIOR_MIN_GAPS`` are recorded.
* The result is clamped to [``BATCH_WINDOW_MIN_SECONDS``,
  ``BATCH_WINDOW_MAX_SECONDS``]; ``BATCH_MAX_WAIT_SECONDS`` still caps a batch.

The estimate is recomputed each time the drainer looks at the queue, so a
fragment that arrives with a longer gap than expected widens the window of the
rest of its burst at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "HISTORY",
    "MARGIN",
    "MIN_HISTORY",
    "PACE_TTL_SECONDS",
    "QUANTILE",
    "SAME_BURST_SECONDS",
    "SLACK",
    "Pace",
    "learned_window",
    "spans_a_turn",
]

SAME_BURST_SECONDS = 60.0  # a longer silence ends a burst
HISTORY = 6  # bursts remembered per contact
MIN_HISTORY = 2  # finished bursts before a contact's own pace replaces the prior
QUANTILE = 0.8  # of the remembered bursts' longest gaps
MARGIN = 1.5
SLACK = 0.5  # seconds
PACE_TTL_SECONDS = 90 * 86400  # a contact silent this long is new again


@dataclass(frozen=True)
class Pace:
    bursts: tuple[float, ...] = ()  # longest gap of each finished burst, oldest first
    current: float = 0.0  # longest gap so far in the burst in progress
    last_at: float | None = None  # arrival of the latest fragment folded in

    def observe(self, arrivals: Iterable[float], turn_at: float | None = None) -> Pace:
        """This pace after the fragments that arrived at ``arrivals``; ``turn_at``: when an
        outgoing message (the gateway's answer, an agent's) last went to the contact."""
        bursts, current, last = list(self.bursts), self.current, self.last_at
        for at in sorted(arrivals):
            if last is not None:
                gap = at - last
                if gap < 0:
                    continue  # older than what is known: already counted
                if gap <= SAME_BURST_SECONDS and not spans_a_turn(last, at, turn_at):
                    current = max(current, gap)
                else:  # a long silence, or the contact answering: the burst ended
                    bursts.append(current)
                    current = 0.0
            last = at
        return Pace(tuple(bursts[-HISTORY:]), current, last)

    def to_json(self) -> str:
        return json.dumps(
            {"b": [round(b, 2) for b in self.bursts], "c": round(self.current, 2), "t": self.last_at},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> Pace:
        """The stored pace; an absent or unreadable one counts as a new contact."""
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            bursts = tuple(float(b) for b in data["b"])[-HISTORY:]
            current = float(data["c"])
            last = None if data["t"] is None else float(data["t"])
        except (ValueError, TypeError, KeyError):
            return cls()
        values = (*bursts, current, last or 0.0)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            return cls()
        return cls(bursts, current, last)

    @property
    def known(self) -> bool:
        """Enough finished bursts (``MIN_HISTORY``) for the contact's own window."""
        return len(self.bursts) >= MIN_HISTORY

    @property
    def own_window(self) -> float:
        """The contact's learned window: ``MARGIN`` x the ``QUANTILE`` of their finished
        bursts' longest gaps + ``SLACK``; 0 while not ``known`` or never fragmented."""
        return _covering(_quantile(self.bursts, QUANTILE)) if self.known else 0.0

    @property
    def burst_window(self) -> float:
        """What covers the burst in progress: ``MARGIN`` x its longest gap + ``SLACK``;
        0 before it has a gap."""
        return _covering(self.current)


def spans_a_turn(before: float, after: float, turn_at: float | None) -> bool:
    """Did an outgoing message go to the contact between two of their fragments?"""
    return turn_at is not None and before < turn_at <= after


def _covering(gap: float) -> float:
    """A window that covers gaps like ``gap`` (the next one is rarely exactly as long); 0 for none."""
    return MARGIN * gap + SLACK if gap else 0.0


def _quantile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def learned_window(
    pace: Pace, queued: Iterable[float], prior: float, low: float, high: float, turn_at: float | None = None
) -> float:
    """The quiet period for a contact with ``pace`` whose fragments ``queued`` wait
    (``turn_at``: the latest outgoing message, ``Pace.observe``)."""
    now = pace.observe(queued, turn_at)
    window = (now.own_window or low) if now.known else prior
    return min(max(window, now.burst_window, low), high)
