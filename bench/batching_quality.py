"""Batching quality: play seeded traces of contacts chatting, in simulated time.

    .venv/bin/python bench/batching_quality.py [--contacts 4000] [--seeds 1 2] [--markdown]
                                               [--text lists|heldout] [--bot-seconds 2]
                                               [--cold] [--plain-seconds 6]

The trace (``bench/trace.py``) has contacts chatting in turns (each turn 1-10 s after
the bot's answer to the one before), each turn one message or a burst of fragments, and
what each fragment says, in Portuguese, Spanish and English: by default the held-out
corpus (``bench/heldout.py``), written apart from the reader's word lists
(``--text lists``: the trace's own lists, on which the reader was written). It is
played for every population the batching goal names: one-message writers fragmenting
2, 5, 10 and 15 % of the time, fast/slow typist mixes 50/50 and 20/80, two seeds each.

Each policy decides when a batch closes, with the gateway's own functions and
engine (``app.batching.simulate.converse``): ``app.batching.rules.close_at`` (sliding window with max
wait), ``app.batching.pace`` (learned window), ``app.batching.smart`` (the smart window: the learned pace
read with the latest fragment's text), their state carried from batch to batch as the
drainer keeps it in Redis, told of every answer (a turn) as the drainer is. The
timeline is the policy's: a turn begins ``think`` after the answer to the one before,
and the answer comes ``--bot-seconds`` after its batch closed; fragments arriving
while the bot thinks join its batch (the drainer's supersede, at most twice).

Reported per policy and population: the share of same-turn fragment pairs merged into
one batch, bot calls per 100 messages, the median and p90 wait added to
single-message turns (new contacts included; and on the first and the fifth turn of a
chat), and the median wait after the last fragment of a fragmented turn. ``--cold``: a
new deployment, no gaps recorded yet (the company prior is ``BATCH_WINDOW_SECONDS``).
``--plain-seconds``: the smart rule with a longer (or shorter) hold for plain text, to
see what merging more would cost the single-message wait.
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
from app.batching import smart  # noqa: E402
from app.batching.analytics import bucket, learned_prior  # noqa: E402
from app.batching.simulate import Policy, Result, company_policy, converse, percentile  # noqa: E402
from bench import heldout  # noqa: E402
from bench.trace import TEXT, Contact, Population, bursts, trace  # noqa: E402

POPULATIONS = [Population(occasional, fast) for fast in (0.5, 0.2) for occasional in (0.02, 0.05, 0.10, 0.15)]
MAX_WAIT = 30.0  # the default BATCH_MAX_WAIT_SECONDS (--max-wait)
LOW, HIGH = 3.0, 30.0  # the default BATCH_WINDOW_MIN_SECONDS / _MAX_SECONDS


class Bound(Policy):
    """Knows where each turn ends (no rule can): the most the max wait lets any rule merge."""

    def __init__(self, max_wait: float) -> None:
        self.max_wait = max_wait

    def close(self, queued: list) -> float:  # type: ignore[override,type-arg]
        return min(queued[-1].last, queued[0].at + self.max_wait)


def prior_of(contacts: list[Contact]) -> float:
    """What ``analytics.prior_window`` learns from these gaps (the window covering 95 % of
    the same-turn ones, in the histogram's buckets), by the analytics' own functions."""
    gaps = Counter(
        float(bucket(b.at - a.at)) for c in contacts for burst in bursts(c) for a, b in pairwise(burst)
    )
    return learned_prior(sorted(gaps.items())) or 10.0


def policies(prior: float, max_wait: float = MAX_WAIT) -> dict[str, Policy]:
    """Every policy compared, with the company prior ``prior``."""
    return {
        "fixed 3 s": company_policy("fixed", 3.0, LOW, HIGH, max_wait, prior),
        "fixed 10 s": company_policy("fixed", 10.0, LOW, HIGH, max_wait, prior),
        "sliding 10 s (default)": company_policy("sliding", 10.0, LOW, HIGH, max_wait, prior),
        "learned": company_policy("learned", 10.0, LOW, HIGH, max_wait, prior),
        "smart": company_policy("smart", 10.0, LOW, HIGH, max_wait, prior),
        "bound (knows each turn's end)": Bound(max_wait),
    }


GOAL = {"of_bound": 0.95, "p50": 3.0, "p90": 8.0}
Row = tuple[float, float, float, float, float, float, float, float]


def row(result: Result, bound: Result) -> Row:
    """(merged, merged / the bound's merged, calls / 100, single p50, p90, p90 on the first
    turn, p90 on the fifth, burst end p50)."""
    merged, calls, p50, p90, end = result.row()
    first = percentile(result.single_waits_by_turn.get(1, []), 0.9)
    fifth = percentile(result.single_waits_by_turn.get(5, []), 0.9)
    of_bound = result.merged / bound.merged if bound.merged else 1.0
    return merged, of_bound, calls, p50, p90, first, fifth, end


def met(r: Row) -> bool:
    _, of_bound, _, p50, p90, first, fifth, _ = r
    p90 = max(p90, first, fifth)
    return of_bound >= GOAL["of_bound"] and p50 <= GOAL["p50"] and p90 <= GOAL["p90"]


def markdown(results: dict[tuple[str, str], list[Row]]) -> None:
    """One row per population and policy, each figure as seed 1 / seed 2 / ..."""
    print(
        "| population | policy | pairs merged | of the bound | bot calls / 100 msgs | single wait p50"
        " | p90 | p90, turn 1 | p90, turn 5 | burst end p50 | goal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    formats = ("{:.1%}", "{:.1%}", "{:.1f}", "{:.1f} s", "{:.1f} s", "{:.1f} s", "{:.1f} s", "{:.1f} s")
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
    parser.add_argument("--text", choices=("heldout", "lists"), default="heldout")
    parser.add_argument("--bot-seconds", type=float, default=2.0, help="the bot's time to answer")
    parser.add_argument("--cold", action="store_true", help="a new deployment: no gaps recorded yet")
    parser.add_argument(
        "--plain-seconds",
        type=float,
        default=smart.PLAIN_SECONDS,
        help="the smart rule's hold for plain text (app.batching.smart.PLAIN_SECONDS; sensitivity)",
    )
    args = parser.parse_args()
    smart.PLAIN_SECONDS = args.plain_seconds  # read by app.batching.smart.smart_window at each call
    text = heldout.TEXT if args.text == "heldout" else TEXT
    results: dict[tuple[str, str], list[Row]] = {}
    for population in (replace(p, misread=args.misread) for p in POPULATIONS):
        for seed in args.seeds:
            contacts = trace(args.contacts, seed, population, text)
            turns = [t for c in contacts for v in c for t in v.turns]
            singles = sum(len(t.fragments) == 1 for t in turns) / len(turns)
            prior = 10.0 if args.cold else prior_of(contacts)
            if not args.markdown:
                print(
                    f"\n{population.name}, seed {seed}: {len(contacts)} contacts, {len(turns)} turns,"
                    f" {singles:.1%} single-message, company prior {prior:g} s"
                )
            played = {
                name: converse(contacts, policy, args.bot_seconds)
                for name, policy in policies(prior, args.max_wait).items()
            }
            bound = played["bound (knows each turn's end)"]
            for name, result in played.items():
                r = row(result, bound)
                results.setdefault((population.name, name), []).append(r)
                if not args.markdown:
                    merged, of_bound, calls, p50, p90, first, fifth, end = r
                    print(
                        f"  {name:30} merged {merged:6.1%} ({of_bound:6.1%} of bound)  calls/100 {calls:5.1f}"
                        f"  single p50 {p50:4.1f}s p90 {p90:4.1f}s"
                        f" (turn 1 {first:4.1f}s, turn 5 {fifth:4.1f}s)"
                        f"  end p50 {end:4.1f}s"
                        + ("  GOAL" if met(r) and not name.startswith("bound") else "")
                    )
    if args.markdown:
        markdown(results)


if __name__ == "__main__":
    main()
