"""Batching quality: replay seeded traces of contacts in simulated time.

    .venv/bin/python bench/batching_quality.py [--contacts 4000] [--seeds 1 2] [--markdown]

The trace (``bench/trace.py``) has what each fragment says, in Portuguese,
Spanish and English, tied to its place in the burst. It is replayed for every
population the batching goal names: one-message writers fragmenting 2, 5, 10
and 15 % of the time, fast/slow typist mixes 50/50 and 20/80, two seeds each.

Each policy decides when a batch closes, with the gateway's own functions and
replay engine (``app.replay``, which ``python -m app analytics`` uses too):
``app.batching.close_at`` (sliding window with max wait), ``app.pace``
(learned window), ``app.smart`` (the smart window: the learned pace read with
the latest fragment's text), their state carried from batch to batch as the
drainer keeps it in Redis; a fragment arriving after its batch closed starts a
new batch. Reported per policy and population: the share of same-burst
fragment pairs merged into one batch, bot calls per 100 messages, the median
and p90 wait added to single-message bursts (new contacts included), and the
median wait after the last fragment of a fragmented burst.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.analytics import bucket, learned_prior  # noqa: E402
from app.replay import Policy, company_policy, replay  # noqa: E402
from bench.trace import Contact, Fragment, Population, trace  # noqa: E402

POPULATIONS = [Population(occasional, fast) for fast in (0.5, 0.2) for occasional in (0.02, 0.05, 0.10, 0.15)]
MAX_WAIT = 30.0  # the default BATCH_MAX_WAIT_SECONDS (--max-wait)
LOW, HIGH = 3.0, 30.0  # the default BATCH_WINDOW_MIN_SECONDS / _MAX_SECONDS


class Bound(Policy):
    """Knows where each burst ends (no rule can): the most the max wait lets any rule merge."""

    def __init__(self, contacts: list[Contact], max_wait: float) -> None:
        self.end = {id(f): burst[-1].at for bursts in contacts for burst in bursts for f in burst}
        self.max_wait = max_wait

    def close(self, queued: list[Fragment]) -> float:
        return min(self.end[id(queued[-1])], queued[0].at + self.max_wait)


def prior_of(contacts: list[Contact]) -> float:
    """What ``analytics.prior_window`` learns from these gaps (the window covering 95 % of
    the same-burst ones, in the histogram's buckets), by the analytics' own functions."""
    gaps = Counter(float(bucket(b.at - a.at)) for c in contacts for burst in c for a, b in pairwise(burst))
    return learned_prior(sorted(gaps.items())) or 10.0


def policies(contacts: list[Contact], prior: float, max_wait: float = MAX_WAIT) -> dict[str, Policy]:
    """Every policy compared, with the company prior learned from ``contacts``' gaps."""
    return {
        "fixed 3 s": company_policy("fixed", 3.0, LOW, HIGH, max_wait, prior),
        "fixed 10 s": company_policy("fixed", 10.0, LOW, HIGH, max_wait, prior),
        "sliding 10 s (default)": company_policy("sliding", 10.0, LOW, HIGH, max_wait, prior),
        "learned": company_policy("learned", 10.0, LOW, HIGH, max_wait, prior),
        "smart": company_policy("smart", 10.0, LOW, HIGH, max_wait, prior),
        "bound (knows each burst's end)": Bound(contacts, max_wait),
    }


GOAL = {"merged": 0.95, "p50": 3.0, "p90": 8.0}


def met(row: tuple[float, float, float, float, float]) -> bool:
    merged, _, p50, p90, _ = row
    return merged >= GOAL["merged"] and p50 <= GOAL["p50"] and p90 <= GOAL["p90"]


def markdown(results: dict[tuple[str, str], list[tuple[float, float, float, float, float]]]) -> None:
    """One row per population and policy, each figure as seed 1 / seed 2 / ..."""
    print(
        "| population | policy | pairs merged | bot calls / 100 msgs | single wait p50"
        " | single wait p90 | burst end wait p50 | goal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    formats = ("{:.1%}", "{:.1f}", "{:.1f} s", "{:.1f} s", "{:.1f} s")
    for (population, name), rows in results.items():
        cells = [" / ".join(f.format(r[i]) for r in rows) for i, f in enumerate(formats)]
        verdict = "n/a" if name.startswith("bound") else "met" if all(met(r) for r in rows) else "—"
        print(f"| {population} | {name} | " + " | ".join(cells) + f" | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-wait", type=float, default=MAX_WAIT, help="BATCH_MAX_WAIT_SECONDS")
    parser.add_argument("--markdown", action="store_true", help="print docs/performance.md's table")
    parser.add_argument(
        "--misread",
        type=float,
        default=0.0,
        help="give this share of fragments a random reading (sensitivity)",
    )
    args = parser.parse_args()
    results: dict[tuple[str, str], list[tuple[float, float, float, float, float]]] = {}
    for population in (replace(p, misread=args.misread) for p in POPULATIONS):
        for seed in args.seeds:
            contacts = trace(args.contacts, seed, population)
            bursts = [b for c in contacts for b in c]
            singles = sum(len(b) == 1 for b in bursts) / len(bursts)
            prior = prior_of(contacts)
            if not args.markdown:
                print(
                    f"\n{population.name}, seed {seed}: {len(contacts)} contacts, {len(bursts)} bursts,"
                    f" {singles:.1%} single-message, company prior {prior:g} s"
                )
            for name, policy in policies(contacts, prior, args.max_wait).items():
                row = replay(contacts, policy).row()
                results.setdefault((population.name, name), []).append(row)
                if not args.markdown:
                    merged, calls, p50, p90, end = row
                    print(
                        f"  {name:24} merged {merged:6.1%}  calls/100 {calls:5.1f}  single p50 {p50:5.1f}s"
                        f"  p90 {p90:5.1f}s  burst end p50 {end:5.1f}s"
                        + ("  GOAL" if met(row) and not name.startswith("bound") else "")
                    )
    if args.markdown:
        markdown(results)


if __name__ == "__main__":
    main()
