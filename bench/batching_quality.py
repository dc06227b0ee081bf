"""Batching quality: replay a seeded trace of contacts in simulated time.

    .venv/bin/python bench/batching_quality.py [--contacts 4000] [--seed 1]

Trace (``trace``): each contact writes 1-8 bursts, a day apart. Contacts are of
two kinds: one-message writers (70 %), who fragment 5 % of the time, and
fragmenters (30 %), who fragment 60 % of the time; independently, half type
fast (gaps of 1-3 s when they fragment) and half slowly (gaps of 5-17 s). A
fragmented burst has 2-5 fragments. About 80 % of all bursts are then a single
message (the script prints the exact share).

Each policy decides when a batch closes, with the gateway's own functions:
``app.batching.close_at`` (sliding window with max wait), ``app.pace``
(learned window, with its state carried from burst to burst as the drainer
keeps it in Redis); a fragment arriving after its batch closed starts a new
batch. Reported per policy: the share of same-burst fragment pairs merged into
one batch, bot calls per 100 messages, and the median / p90 wait added for
single-message bursts (all of them, and those of first-time contacts).
"""

from __future__ import annotations

import argparse
import random
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

DAY = 86400.0
Contact = list[list[float]]  # bursts, each a list of absolute arrival times


@dataclass
class Result:
    pairs: int = 0
    merged: int = 0
    messages: int = 0
    batches: int = 0
    single_waits: list[float] = field(default_factory=list)
    first_single_waits: list[float] = field(default_factory=list)


def trace(contacts: int, seed: int, occasional: float = 0.05) -> list[Contact]:
    rng = random.Random(seed)
    result = []
    for _ in range(contacts):
        fragments = 0.6 if rng.random() < 0.3 else occasional
        low, high = (1.0, 3.0) if rng.random() < 0.5 else (5.0, 17.0)
        bursts = []
        for day in range(rng.randint(1, 8)):
            times = [day * DAY + rng.uniform(0, 3600)]
            if rng.random() < fragments:
                for _ in range(rng.randint(1, 4)):
                    times.append(times[-1] + rng.uniform(low, high))
            bursts.append(times)
        result.append(bursts)
    return result


class Policy:
    """Closes batches; ``observe`` sees each batch when it is claimed."""

    def close(self, first: float, last: float, queued: list[float]) -> float:
        raise NotImplementedError

    def observe(self, batch: list[float]) -> None:
        pass

    def new_contact(self) -> None:
        pass


class Stateless(Policy):
    def __init__(self, rule: Callable[[float, float], float]) -> None:
        self.rule = rule

    def close(self, first: float, last: float, queued: list[float]) -> float:
        return self.rule(first, last)


class Learned(Policy):
    def __init__(self, prior: float, low: float, high: float, max_wait: float) -> None:
        self.prior, self.low, self.high, self.max_wait = prior, low, high, max_wait
        self.pace = Pace()

    def close(self, first: float, last: float, queued: list[float]) -> float:
        window = learned_window(self.pace, queued, self.prior, self.low, self.high)
        return close_at(first, last, window, self.max_wait)

    def observe(self, batch: list[float]) -> None:
        self.pace = self.pace.observe(batch)

    def new_contact(self) -> None:
        self.pace = Pace()


def replay(contacts: list[Contact], policy: Policy) -> Result:
    result = Result()
    for bursts in contacts:
        policy.new_contact()
        for number, times in enumerate(bursts):
            result.messages += len(times)
            result.pairs += len(times) - 1
            queued = [times[0]]
            for arrival in times[1:]:
                if arrival <= policy.close(queued[0], queued[-1], queued):
                    result.merged += 1
                    queued.append(arrival)
                else:
                    policy.observe(queued)
                    result.batches += 1
                    queued = [arrival]
            if len(times) == 1:
                wait = policy.close(times[0], times[0], queued) - times[0]
                result.single_waits.append(wait)
                if number == 0:
                    result.first_single_waits.append(wait)
            policy.observe(queued)
            result.batches += 1
    return result


def prior_of(contacts: list[Contact], share: float = 0.95) -> float:
    """What ``analytics`` would have learned: the window covering ``share`` of gaps, 0.5 s buckets."""
    gaps = sorted(b - a for bursts in contacts for t in bursts for a, b in pairwise(t))
    exact = gaps[min(len(gaps) - 1, int(share * len(gaps)))]
    return (int(exact * 2) + 1) / 2


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[int(q * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--occasional", type=float, default=0.05, help="how often one-message writers fragment (sensitivity)"
    )
    args = parser.parse_args()
    contacts = trace(args.contacts, args.seed, args.occasional)
    bursts = [b for c in contacts for b in c]
    singles = sum(len(b) == 1 for b in bursts) / len(bursts)
    prior = prior_of(contacts)
    policies: dict[str, Policy] = {
        "fixed 3 s": Stateless(lambda first, last: first + 3),
        "fixed 10 s": Stateless(lambda first, last: first + 10),
        "sliding 10 s, max 30 s": Stateless(lambda first, last: close_at(first, last, 10, 30)),
        "sliding 18 s, max 60 s": Stateless(lambda first, last: close_at(first, last, 18, 60)),
        "learned 3-30 s, max 30 s": Learned(prior, 3, 30, 30),
        "learned 3-30 s, max 60 s": Learned(prior, 3, 30, 60),
    }
    print(
        f"contacts={args.contacts} seed={args.seed} occasional={args.occasional} bursts={len(bursts)}"
        f" single-message bursts={singles:.1%} company prior (95 % of gaps)={prior:g} s"
    )
    print(
        f"{'policy':25} {'pairs merged':>12} {'bot calls/100 msgs':>18}"
        f" {'single wait p50':>15} {'p90':>6} {'new contact p50':>15}"
    )
    for name, policy in policies.items():
        r = replay(contacts, policy)
        print(
            f"{name:25} {r.merged / r.pairs:12.1%} {100 * r.batches / r.messages:18.1f}"
            f" {statistics.median(r.single_waits):14.1f}s {pct(r.single_waits, 0.9):5.1f}s"
            f" {statistics.median(r.first_single_waits):14.1f}s"
        )


if __name__ == "__main__":
    main()
