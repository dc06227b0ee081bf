"""Batching analytics: how far apart this company's contacts type, and what the
window makes of it. The tuning loop the original design asked for ("adjust the
window based on real message interval patterns"), made a tool.

The worker records every gap between consecutive fragments of a conversation
into a fixed-bucket histogram in Redis (bounded memory: one counter per
bucket, whatever the traffic); batch sizes are already a histogram
(``gateway_batch_size_messages``). In every window mode it also counts, by how
each fragment reads (``app.smart.read``), what followed it: another fragment
within 60 s (by gap bucket), the end of a fragmented burst, or nothing (a
message sent alone). ``report`` reads them, with what the smart window
(``BATCH_WINDOW_MODE=smart``) would have merged and waited on those same
fragments, so an operator can decide before switching; ``plot`` draws the gaps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

import redis
from prometheus_client.utils import floatToGoString

from app import keys
from app.metrics import HISTOGRAMS
from app.pace import SAME_BURST_SECONDS, Pace
from app.smart import Reading, smart_window

if TYPE_CHECKING:
    from app.settings import CompanyConfig

__all__ = [
    "GAP_BOUNDS",
    "Arrival",
    "GapReport",
    "SmartEstimate",
    "count_gaps",
    "plot",
    "prior_window",
    "record_gaps",
    "report",
    "smart_estimate",
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
READINGS = frozenset(r.value for r in Reading)


def _bucket(gap: float) -> str:
    return repr(next((float(b) for b in GAP_BOUNDS if gap <= b), float("inf")))


@dataclass(frozen=True)
class Arrival:
    """A claimed fragment, as the gap bookkeeping sees it."""

    at: float
    reading: str = ""  # app.smart.Reading value; '' when unknown (counted in the gaps only)
    first: bool = True  # began its burst (nothing from the conversation in the 60 s before)

    def stored(self) -> str:
        return f"{self.reading} {'first' if self.first else 'later'}"

    @classmethod
    def from_stored(cls, at: float, raw: str | None) -> Arrival:
        reading, _, place = (raw or "").partition(" ")
        return cls(at, reading if reading in READINGS else "", place != "later")


def count_gaps(
    pipe: redis.client.Pipeline,
    company: str,
    conversation: str,
    previous: Arrival | None,
    arrivals: Sequence[Arrival],
) -> Arrival | None:
    """Add to ``pipe`` the counting of the gaps after ``previous`` and between ``arrivals``
    (one claimed batch, in order), and of what followed each fragment by how it reads;
    return the latest arrival counted (what ``previous`` is for the next batch)."""
    if not arrivals:
        return previous
    latest = previous
    for arrival in arrivals:
        if latest is None:
            latest = arrival
            continue
        gap = arrival.at - latest.at
        if gap < 0:
            continue  # older than what is known: already counted
        if gap <= LAST_FRAGMENT_MAX_AGE:
            pipe.hincrby(keys.gap_histogram(company), _bucket(gap), 1)
        same_burst = gap <= SAME_BURST_SECONDS
        if latest.reading:
            followed = _bucket(gap) if same_burst else "alone" if latest.first else "end"
            pipe.hincrby(keys.reading_gaps(company), f"{latest.reading}:{followed}", 1)
        latest = Arrival(arrival.at, arrival.reading, not same_burst)
    pipe.hset(keys.last_fragment(company), conversation, repr(latest.at))
    pipe.hset(keys.last_reading(company), conversation, latest.stored())
    return latest


def record_gaps(
    client: redis.Redis, company: str, conversation: str, arrivals: Sequence[Arrival | float]
) -> None:
    """Count the gaps before and between ``arrivals`` (one claimed batch, in order; a bare
    time is a fragment whose reading is unknown)."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.last_fragment(company), conversation)
    pipe.hget(keys.last_reading(company), conversation)
    at, reading = pipe.execute()
    previous = Arrival.from_stored(float(at), reading) if at else None
    batch = [a if isinstance(a, Arrival) else Arrival(float(a)) for a in arrivals]
    count_gaps(pipe, company, conversation, previous, batch)
    pipe.execute()


def _buckets(client: redis.Redis, company: str) -> list[tuple[float, int]]:
    return sorted((float(b), int(c)) for b, c in client.hgetall(keys.gap_histogram(company)).items())


_priors: dict[str, tuple[float, float | None]] = {}  # company -> (valid until, window or None)


def prior_window(client: redis.Redis, company: str, fallback: float) -> float:
    """The learned window of a new contact: what merged ``PRIOR_SHARE`` of this company's
    same-burst gaps, or ``fallback`` while fewer than ``PRIOR_MIN_GAPS`` are recorded.
    Read at most once a minute per process."""
    now = time.monotonic()
    cached = _priors.get(company)
    if cached is None or cached[0] < now:
        cached = (now + PRIOR_CACHE_SECONDS, _learned_prior(_buckets(client, company)))
        _priors[company] = cached
    return fallback if cached[1] is None else cached[1]


def _learned_prior(buckets: list[tuple[float, int]]) -> float | None:
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


def report(client: redis.Redis, company: str, window: float) -> GapReport:
    buckets = _buckets(client, company)
    sizes = client.hgetall(keys.histograms(company))
    name, (_, bounds) = "gateway_batch_size_messages", HISTOGRAMS["gateway_batch_size_messages"]
    batch_sizes = [(floatToGoString(b), int(sizes.get(f"{name}:{floatToGoString(b)}", 0))) for b in bounds]
    batch_sizes.append(("+Inf", int(sizes.get(f"{name}:+Inf", 0))))
    return GapReport(company, window, buckets, batch_sizes)


def plot(result: GapReport, path: str) -> None:
    """Write a PNG: the gap histogram up to 60 s, the window and the 90/95/99% marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(b, c) for b, c in result.buckets if b <= SAME_BURST_SECONDS]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    lower = {b: a for a, b in pairwise((0.0, *map(float, GAP_BOUNDS)))}  # each bucket spans (lower, bound]
    ax.bar(
        [lower[b] for b, _ in shown],
        [c for _, c in shown],
        width=[(b - lower[b]) * 0.9 for b, _ in shown],
        align="edge",
        color="#4c72b0",
    )
    ax.axvline(result.window, color="#c44e52", linewidth=2, label=f"current window {result.window:g} s")
    for share, style in ((0.90, ":"), (0.95, "--"), (0.99, "-.")):
        bound = result.window_for(share)
        if bound is not None:
            ax.axvline(
                bound, color="#55a868", linestyle=style, label=f"{share:.0%} of same-burst pairs: {bound:g} s"
            )
    ax.set_xlabel("gap between consecutive fragments (s)")
    ax.set_ylabel("fragment pairs")
    ax.set_title(
        f"{result.company}: {result.pairs} fragment pairs; the {result.window:g} s window merges"
        f" {result.merged_same_burst_share():.0%} of same-burst pairs"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _weighted(values: list[tuple[float, int]], q: float) -> float | None:
    """The ``q`` quantile of values given with their counts."""
    total = sum(c for _, c in values)
    running = 0
    for value, count in sorted(values):
        running += count
        if total and running >= q * total:
            return value
    return None


@dataclass(frozen=True)
class SmartEstimate:
    """What the smart window would have merged and waited on this company's recorded
    fragments, next to what the company's current mode does, as for contacts with no
    history (a returning contact's pace only adjusts it; the figures are for deciding,
    not a promise). A pair counts as merged when its gap is within the window after its
    first fragment, the max wait aside."""

    company: str
    mode: str
    window: dict[str, float]  # reading -> the smart window after such a fragment
    current: dict[str, float]  # reading -> the current mode's window
    followed: dict[str, list[tuple[float, int]]]  # reading -> (gap bucket, count) within 60 s
    ended: dict[str, int]  # reading -> fragmented bursts it ended
    alone: dict[str, int]  # reading -> messages sent alone
    max_wait: float
    prior: float = field(default=0.0)

    @property
    def pairs(self) -> int:
        return sum(c for counts in self.followed.values() for _, c in counts)

    def merged(self, windows: dict[str, float]) -> float:
        merged = sum(c for r, counts in self.followed.items() for b, c in counts if b <= windows[r])
        return merged / self.pairs if self.pairs else 0.0

    def waits(self, windows: dict[str, float], counts: dict[str, int], q: float) -> float | None:
        return _weighted([(min(windows[r], self.max_wait), n) for r, n in counts.items() if n], q)

    def text(self) -> str:
        def shown(value: float | None) -> str:
            return "n/a" if value is None else f"{value:g} s"

        lines = [
            f"company {self.company}: the smart window (BATCH_WINDOW_MODE=smart) on the recorded"
            f" fragments, as for contacts with no history (prior {self.prior:g} s), against the"
            f" current mode ({self.mode}):",
            f"  {'reading':11} {'followed <=60 s':>15} {'ended a burst':>13} {'sent alone':>10}"
            f" {'smart window':>12} {'current':>8}",
        ]
        for reading in Reading:
            r = reading.value
            lines.append(
                f"  {r:11} {sum(c for _, c in self.followed.get(r, [])):>15} {self.ended.get(r, 0):>13}"
                f" {self.alone.get(r, 0):>10} {self.window[r]:>10g} s {self.current[r]:>6g} s"
            )
        if not self.pairs and not sum(self.alone.values()):
            lines.append("  nothing recorded yet: the worker counts fragments as it claims them")
            return "\n".join(lines)
        lines.append(
            f"  same-burst pairs merged: smart {self.merged(self.window):.1%},"
            f" current {self.merged(self.current):.1%} ({self.pairs} pairs)"
        )
        for label, counts in (("a message sent alone", self.alone), ("a burst's last fragment", self.ended)):
            smart = [shown(self.waits(self.window, counts, q)) for q in (0.5, 0.9)]
            now = [shown(self.waits(self.current, counts, q)) for q in (0.5, 0.9)]
            lines.append(
                f"  wait after {label}: smart p50 {smart[0]} / p90 {smart[1]},"
                f" current p50 {now[0]} / p90 {now[1]} ({sum(counts.values())} recorded)"
            )
        return "\n".join(lines)


def smart_estimate(client: redis.Redis, config: CompanyConfig) -> SmartEstimate:
    """``SmartEstimate`` for one company, from what its workers recorded."""
    from app.pace import learned_window

    company = config.company_id
    prior = _learned_prior(_buckets(client, company)) or config.batch_window_seconds
    low, high = config.batch_window_min_seconds, config.batch_window_max_seconds
    followed: dict[str, list[tuple[float, int]]] = {r.value: [] for r in Reading}
    ended: dict[str, int] = {}
    alone: dict[str, int] = {}
    for name, count in client.hgetall(keys.reading_gaps(company)).items():
        reading, _, what = name.partition(":")
        if reading not in READINGS:
            continue
        if what == "end":
            ended[reading] = ended.get(reading, 0) + int(count)
        elif what == "alone":
            alone[reading] = alone.get(reading, 0) + int(count)
        else:
            try:
                followed[reading].append((float(what), int(count)))
            except ValueError:
                continue
    smart = {r.value: smart_window(Pace(), [0.0], r, prior, low, high) for r in Reading}
    if config.batch_window_mode == "smart":
        current = dict(smart)
    elif config.batch_window_mode == "learned":
        current = dict.fromkeys(smart, learned_window(Pace(), [0.0], prior, low, high))
    else:
        current = dict.fromkeys(smart, config.batch_window_seconds)
    return SmartEstimate(
        company, config.batch_window_mode, smart, current, followed, ended, alone,
        config.batch_max_wait_seconds, prior,
    )  # fmt: skip
