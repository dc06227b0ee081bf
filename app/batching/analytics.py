"""Batching analytics: how far apart this company's contacts type, and what the
window makes of it. The tuning loop the original design asked for ("adjust the
window based on real message interval patterns"), made a tool.

The worker records every gap between consecutive fragments of a conversation
into a fixed-bucket histogram in Redis (bounded memory: one counter per
bucket, whatever the traffic); batch sizes are already a histogram
(``gateway_batch_size_messages``). ``app.batching.report`` reads both for an operator.

In every window mode the worker also keeps the company's latest fragments, as
``<contact> <arrival> <reading>`` (how the fragment reads, ``app.batching.smart.read``;
never its text), in a list capped at ``FRAGMENT_LOG_LENGTH`` entries.
``app.batching.report.smart_estimate`` replays them through the company's current policy and the
smart one (``app.batching.simulate``, the simulator's engine), so an operator sees what
``BATCH_WINDOW_MODE=smart`` would have merged and waited on their own traffic
before switching.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import redis

from app.batching.pace import SAME_BURST_SECONDS, spans_a_turn
from app.batching.simulate import Fragment
from app.batching.smart import Reading
from app.store import keys

if TYPE_CHECKING:
    pass

__all__ = [
    "GAP_BOUNDS",
    "TURN",
    "GapReport",
    "LoggedFragment",
    "bucket",
    "bursts_of",
    "count_gaps",
    "gap_buckets",
    "learned_prior",
    "log_fragments",
    "prior_window",
    "record_gaps",
]

# 0.5 s resolution up to 30 s, where the window lives; coarser beyond.
GAP_BOUNDS: tuple[float, ...] = (
    *(i / 2 for i in range(1, 61)),
    40,
    50,
    60,
    90,
    120,
    180,
    300,
    600,
    1800,
    3600,
    86400,
)
LAST_FRAGMENT_MAX_AGE = 86400.0
PRIOR_SHARE = 0.95
PRIOR_MIN_GAPS = 50
PRIOR_CACHE_SECONDS = 60.0


TURN = "turn"  # the reading of a logged turn marker (``bursts_of``)


def bucket(gap: float) -> str:
    """The histogram bucket of a gap: its upper bound, as stored."""
    return repr(next((float(b) for b in GAP_BOUNDS if gap <= b), float("inf")))


def count_gaps(
    pipe: redis.client.Pipeline,
    company: str,
    conversation: str,
    previous: float | None,
    arrivals: Sequence[float],
    turn_at: float | None = None,
) -> float | None:
    """Add to ``pipe`` the counting of the gaps after ``previous`` and between ``arrivals``
    (not one across a turn, ``turn_at``: the contact answering is no fragment gap); return
    the latest arrival counted (what ``previous`` is for the next batch)."""
    if not arrivals:
        return previous
    times = [previous, *arrivals] if previous is not None else list(arrivals)
    for a, b in pairwise(times):
        if 0 <= b - a <= LAST_FRAGMENT_MAX_AGE and not spans_a_turn(a, b, turn_at):
            pipe.hincrby(keys.gap_histogram(company), bucket(b - a), 1)
    latest = max(times)
    pipe.hset(keys.last_fragment(company), conversation, repr(latest))
    return latest


def record_gaps(client: redis.Redis, company: str, conversation: str, arrivals: Sequence[float]) -> None:
    """Count the gaps before and between ``arrivals`` (one claimed batch, in order)."""
    previous = client.hget(keys.last_fragment(company), conversation)
    pipe = client.pipeline(transaction=False)
    count_gaps(pipe, company, conversation, float(previous) if previous else None, arrivals)
    pipe.execute()


def gap_buckets(client: redis.Redis, company: str) -> list[tuple[float, int]]:
    return sorted((float(b), int(c)) for b, c in client.hgetall(keys.gap_histogram(company)).items())


_priors: dict[str, tuple[float, float | None]] = {}  # company -> (valid until, window or None)


def prior_window(client: redis.Redis, company: str, fallback: float) -> float:
    """The learned window of a new contact: what merged ``PRIOR_SHARE`` of this company's
    same-burst gaps, or ``fallback`` while fewer than ``PRIOR_MIN_GAPS`` are recorded.
    Read at most once a minute per process."""
    now = time.monotonic()
    cached = _priors.get(company)
    if cached is None or cached[0] < now:
        cached = (now + PRIOR_CACHE_SECONDS, learned_prior(gap_buckets(client, company)))
        _priors[company] = cached
    return fallback if cached[1] is None else cached[1]


def learned_prior(buckets: list[tuple[float, int]]) -> float | None:
    """The window merging ``PRIOR_SHARE`` of the same-burst gaps in ``buckets`` ((upper
    bound, count) pairs), or None while fewer than ``PRIOR_MIN_GAPS`` are known."""
    result = GapReport("", 0.0, buckets, [])
    enough = sum(c for _, c in result.same_burst) >= PRIOR_MIN_GAPS
    return result.window_for(PRIOR_SHARE) if enough else None


@dataclass(frozen=True)
class GapReport:
    company: str
    window: float
    buckets: list[tuple[float, int]]  # (upper bound s, count), ascending
    batch_sizes: list[tuple[str, int]]  # (upper bound, count)

    @property
    def pairs(self) -> int:
        return sum(count for _, count in self.buckets)

    @property
    def same_burst(self) -> list[tuple[float, int]]:
        return [(b, c) for b, c in self.buckets if b <= SAME_BURST_SECONDS]

    def merged_share(self) -> float:
        """Share of all fragment pairs whose gap the current window merges."""
        merged = sum(c for b, c in self.buckets if b <= self.window)
        return merged / self.pairs if self.pairs else 0.0

    def merged_same_burst_share(self) -> float:
        """Share of same-burst pairs (gap up to 60 s) that the current window merges."""
        total = sum(c for _, c in self.same_burst)
        return sum(c for b, c in self.same_burst if b <= self.window) / total if total else 0.0

    def window_for(self, share: float) -> float | None:
        """Smallest bucket bound merging ``share`` of the same-burst pairs."""
        total = sum(c for _, c in self.same_burst)
        running = 0
        for bound, count in self.same_burst:
            running += count
            if total and running / total >= share:
                return bound
        return None

    def text(self) -> str:
        lines = [f"company {self.company}: {self.pairs} fragment pairs, window {self.window:g} s"]
        lines.append(
            f"  merged by the current window: {self.merged_share():.1%}"
            f" of all pairs, {self.merged_same_burst_share():.1%} of same-burst pairs"
        )
        for share in (0.90, 0.95, 0.99):
            bound = self.window_for(share)
            shown = f"{bound:g} s" if bound is not None else "n/a"
            lines.append(
                f"  window merging {share:.0%} of same-burst pairs (gap <= {SAME_BURST_SECONDS:g} s): {shown}"
            )
        lines.append("  gap distribution (upper bound: count, cumulative):")
        running = 0
        for bound, count in self.buckets:
            running += count
            if count:
                lines.append(f"    <= {bound:>7g} s: {count:>7}  {running / self.pairs:6.1%}")
        lines.append("  batch sizes (messages <= n: batches):")
        lines.extend(f"    <= {bound:>4}: {count}" for bound, count in self.batch_sizes if count)
        return "\n".join(lines)


@dataclass(frozen=True)
class LoggedFragment:
    """One entry of ``<company>:webhook_fragments``: who, when, how it read."""

    subject: str  # the pace's subject: contact-<id>, or conversation-<id>
    at: float
    reading: str  # how it read (``app.batching.smart.Reading``), or ``TURN``: an answer went out then

    def entry(self) -> str:
        return f"{self.subject} {self.at:.3f} {self.reading}"

    @classmethod
    def parse(cls, entry: str) -> LoggedFragment | None:
        try:
            subject, at, reading = entry.split(" ")
            return cls(subject, float(at), reading if reading == TURN else Reading(reading).value)
        except ValueError:
            return None


def log_fragments(
    pipe: redis.client.Pipeline, company: str, fragments: Sequence[LoggedFragment], length: int
) -> None:
    """Add to ``pipe`` the logging of claimed fragments, keeping the latest ``length``
    (``FRAGMENT_LOG_LENGTH``; 0 logs nothing)."""
    if fragments and length > 0:
        pipe.rpush(keys.fragment_log(company), *(f.entry() for f in fragments))
        pipe.ltrim(keys.fragment_log(company), -length, -1)


def bursts_of(fragments: Iterable[Fragment]) -> list[list[Fragment]]:
    """One contact's logged fragments, by arrival, cut into bursts at silences over 60 s
    and at the turns logged among them (an answer went to the contact: ``TURN``)."""
    bursts: list[list[Fragment]] = []
    turned = False
    for fragment in sorted(fragments, key=lambda f: f.at):
        if fragment.reading == TURN:
            turned = True
            continue
        if bursts and not turned and fragment.at - bursts[-1][-1].at <= SAME_BURST_SECONDS:
            bursts[-1].append(fragment)
        else:
            bursts.append([fragment])
        turned = False
    return bursts
