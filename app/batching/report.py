"""What the window makes of a company's traffic, for an operator: the gap histogram
and the batch sizes (``report``, drawn by ``plot``), and what ``smart`` would have
merged and waited on the company's own fragments (``smart_estimate``: the fragment
log replayed through the simulator). Read by the status page and ``python -m app
analytics``; the worker only records (``app.batching.analytics``)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import redis
from prometheus_client.utils import floatToGoString

from app.batching.analytics import TURN, bursts_of
from app.batching.pace import SAME_BURST_SECONDS
from app.batching.simulate import Result, company_policy, replay
from app.metrics import HISTOGRAMS, Histogram
from app.store import keys

if TYPE_CHECKING:
    from app.settings import CompanyConfig

from app.batching.analytics import GAP_BOUNDS, GapReport, LoggedFragment, gap_buckets, learned_prior

__all__ = ["SmartEstimate", "plot", "report", "smart_estimate"]


def report(client: redis.Redis, company: str, window: float) -> GapReport:
    buckets = gap_buckets(client, company)
    sizes = client.hgetall(keys.histograms(company))
    name, (_, bounds) = Histogram.BATCH_SIZE, HISTOGRAMS[Histogram.BATCH_SIZE]
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


@dataclass(frozen=True)
class SmartEstimate:
    """The company's logged fragments replayed through its current policy and the smart
    one. Every contact starts the log new (their older pace is not replayed), so for
    companies with many regulars the smart figures are, if anything, pessimistic."""

    company: str
    mode: str
    prior: float
    fragments: int
    contacts: int
    span_seconds: float
    current: Result
    smart: Result

    def text(self) -> str:
        lines = [
            f"company {self.company}: the smart window (BATCH_WINDOW_MODE=smart) against the"
            f" current mode ({self.mode}) on the latest {self.fragments} fragments"
            f" ({self.contacts} contacts, {self.span_seconds / 3600:.1f} h);"
            f" new-contact prior {self.prior:g} s",
        ]
        if not self.fragments:
            lines.append("  nothing recorded yet: the worker logs fragments as it claims them")
            return "\n".join(lines)
        lines.append(
            f"  {'policy':10} {'pairs merged':>12} {'bot calls/100 msgs':>18} {'single wait p50':>15}"
            f" {'p90':>6} {'burst end p50':>13}"
        )
        for name, result in (("current", self.current), ("smart", self.smart)):
            merged, calls, p50, p90, end = result.row()
            lines.append(f"  {name:10} {merged:12.1%} {calls:18.1f} {p50:14.1f}s {p90:5.1f}s {end:12.1f}s")
        lines.append(
            f"  ({self.current.pairs} same-burst pairs, {len(self.current.single_waits)} single messages;"
            " a pair the current mode split with an answer between its two fragments looks like a"
            " turn here, so the current mode's merging reads high: compare the live figures)"
        )
        return "\n".join(lines)


def smart_estimate(client: redis.Redis, config: CompanyConfig) -> SmartEstimate:
    """``SmartEstimate`` for one company, from its logged fragments and gap histogram."""
    company = config.company_id
    logged = [f for f in map(LoggedFragment.parse, client.lrange(keys.fragment_log(company), 0, -1)) if f]
    by_subject: dict[str, list[LoggedFragment]] = {}
    for fragment in logged:
        by_subject.setdefault(fragment.subject, []).append(fragment)
    contacts = [bursts_of(fragments) for fragments in by_subject.values()]
    prior = learned_prior(gap_buckets(client, company)) or config.batch_window_seconds
    settings = (
        config.batch_window_seconds,
        config.batch_window_min_seconds,
        config.batch_window_max_seconds,
        config.batch_max_wait_seconds,
        prior,
    )
    span = max((f.at for f in logged), default=0.0) - min((f.at for f in logged), default=0.0)
    return SmartEstimate(
        company,
        config.batch_window_mode,
        prior,
        sum(f.reading != TURN for f in logged),  # the turns logged among them are no fragments
        len(contacts),
        span,
        replay(contacts, company_policy(config.batch_window_mode, *settings)),
        replay(contacts, company_policy("smart", *settings)),
    )
