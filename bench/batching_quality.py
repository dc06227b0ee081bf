"""Batching quality: replay seeded traces of contacts in simulated time.

    .venv/bin/python bench/batching_quality.py [--contacts 4000] [--seeds 1 2] [--markdown]

The trace (``bench/trace.py``) has what each fragment says, in Portuguese,
Spanish and English, tied to its place in the burst. It is replayed for every
population the batching goal names: one-message writers fragmenting 2, 5, 10
and 15 % of the time, fast/slow typist mixes 50/50 and 20/80, two seeds each.

Each policy decides when a batch closes, with the gateway's own functions:
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
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.batching import close_at  # noqa: E402
from app.pace import Pace, learned_window  # noqa: E402
from app.smart import read, smart_window  # noqa: E402
from bench.trace import Fragment, Population, trace  # noqa: E402

Contact = list[list[Fragment]]
POPULATIONS = [Population(occasional, fast) for fast in (0.5, 0.2) for occasional in (0.02, 0.05, 0.10, 0.15)]
MAX_WAIT = 30.0  # the default BATCH_MAX_WAIT_SECONDS (--max-wait)
LOW, HIGH = 3.0, 30.0  # the default BATCH_WINDOW_MIN_SECONDS / _MAX_SECONDS


@dataclass
class Result:
    pairs: int = 0
    merged: int = 0
    messages: int = 0
    batches: int = 0
    single_waits: list[float] = field(default_factory=list)
    end_waits: list[float] = field(default_factory=list)

    def row(self) -> tuple[float, float, float, float, float]:
        return (
            self.merged / self.pairs,
            100 * self.batches / self.messages,
            statistics.median(self.single_waits),
            pct(self.single_waits, 0.9),
            statistics.median(self.end_waits),
        )


class Policy:
    """Closes batches; ``observe`` sees each batch when it is claimed."""

    def close(self, queued: list[Fragment]) -> float:
        raise NotImplementedError

    def observe(self, batch: list[Fragment]) -> None:
        pass

    def new_contact(self) -> None:
        pass


class Bound(Policy):
    """Knows where each burst ends (no rule can): the most the max wait lets any rule merge."""

    def __init__(self, contacts: list[Contact], max_wait: float) -> None:
        self.end = {id(f): burst[-1].at for bursts in contacts for burst in bursts for f in burst}
        self.max_wait = max_wait

    def close(self, queued: list[Fragment]) -> float:
        return min(self.end[id(queued[-1])], queued[0].at + self.max_wait)


class Stateless(Policy):
    def __init__(self, rule: Callable[[float, float], float]) -> None:
        self.rule = rule

    def close(self, queued: list[Fragment]) -> float:
        return self.rule(queued[0].at, queued[-1].at)


class Paced(Policy):
    """A policy that remembers the contact's pace, as the drainer does in ``<company>:webhook_pace:*``."""

    def __init__(self, prior: float, max_wait: float) -> None:
        self.prior, self.max_wait = prior, max_wait
        self.pace = Pace()

    def window(self, queued: list[Fragment]) -> float:
        raise NotImplementedError

    def close(self, queued: list[Fragment]) -> float:
        return close_at(queued[0].at, queued[-1].at, self.window(queued), self.max_wait)

    def observe(self, batch: list[Fragment]) -> None:
        self.pace = self.pace.observe(f.at for f in batch)

    def new_contact(self) -> None:
        self.pace = Pace()


class Learned(Paced):
    def window(self, queued: list[Fragment]) -> float:
        return learned_window(self.pace, [f.at for f in queued], self.prior, LOW, HIGH)


class Smart(Paced):
    def window(self, queued: list[Fragment]) -> float:
        last = queued[-1]
        reading = read(last.text, last.attachment)
        return smart_window(self.pace, [f.at for f in queued], reading, self.prior, LOW, HIGH)


def replay(contacts: list[Contact], policy: Policy) -> Result:
    result = Result()
    for bursts in contacts:
        policy.new_contact()
        for burst in bursts:
            result.messages += len(burst)
            result.pairs += len(burst) - 1
            queued = [burst[0]]
            for fragment in burst[1:]:
                if fragment.at <= policy.close(queued):
                    result.merged += 1
                    queued.append(fragment)
                else:
                    policy.observe(queued)
                    result.batches += 1
                    queued = [fragment]
            wait = policy.close(queued) - burst[-1].at
            (result.single_waits if len(burst) == 1 else result.end_waits).append(max(0.0, wait))
            policy.observe(queued)
            result.batches += 1
    return result


def prior_of(contacts: list[Contact], share: float = 0.95) -> float:
    """What ``analytics.prior_window`` learns: the window covering ``share`` of same-burst gaps
    (0.5 s buckets)."""
    gaps = sorted(b.at - a.at for bursts in contacts for burst in bursts for a, b in pairwise(burst))
    exact = gaps[min(len(gaps) - 1, int(share * len(gaps)))]
    return (int(exact * 2) + 1) / 2


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[int(q * (len(ordered) - 1))]


def policies(contacts: list[Contact], max_wait: float = MAX_WAIT) -> dict[str, Policy]:
    prior = prior_of(contacts)
    return {
        "fixed 3 s": Stateless(lambda first, last: first + 3),
        "fixed 10 s": Stateless(lambda first, last: first + 10),
        "sliding 10 s (default)": Stateless(lambda first, last: close_at(first, last, 10, max_wait)),
        "learned": Learned(prior, max_wait),
        "smart": Smart(prior, max_wait),
        "bound (knows each burst's end)": Bound(contacts, max_wait),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-wait", type=float, default=MAX_WAIT, help="BATCH_MAX_WAIT_SECONDS")
    parser.add_argument("--markdown", action="store_true", help="print docs/performance.md's table rows")
    args = parser.parse_args()
    goal = {"merged": 0.95, "p50": 3.0, "p90": 8.0}
    if args.markdown:
        columns = ["population", "seed", "policy", "pairs merged", "bot calls / 100 msgs"]
        columns += ["single wait p50", "p90", "burst end wait p50"]
        print("| " + " | ".join(columns) + " |")
        print("|---" * len(columns) + "|")
    for population in POPULATIONS:
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
            for name, policy in policies(contacts, args.max_wait).items():
                merged, calls, p50, p90, end = replay(contacts, policy).row()
                met = merged >= goal["merged"] and p50 <= goal["p50"] and p90 <= goal["p90"]
                if args.markdown:
                    print(
                        f"| {population.name} | {seed} | {name} | {merged:.1%} | {calls:.1f}"
                        f" | {p50:.1f} s | {p90:.1f} s | {end:.1f} s |" + (" goal met" if met else "")
                    )
                else:
                    print(
                        f"  {name:24} merged {merged:6.1%}  calls/100 {calls:5.1f}  single p50 {p50:5.1f}s"
                        f"  p90 {p90:5.1f}s  burst end p50 {end:5.1f}s" + ("  GOAL" if met else "")
                    )


if __name__ == "__main__":
    main()
