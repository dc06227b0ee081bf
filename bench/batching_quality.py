"""Batching quality: replay a seeded trace of conversations in simulated time.

    .venv/bin/python bench/batching_quality.py [--conversations 5000] [--seed 1]

Trace: 80 % of conversations are a single message; the rest are bursts of
2-5 fragments from fast typists (gaps 1-3 s) or slow typists (gaps 5-17 s).
Each policy decides, with the gateway's own rule (``app.batching.close_at``
for the sliding window), when a batch closes; a fragment arriving after its
batch closed starts a new batch. Reported per policy: the share of same-burst
fragment pairs merged into one batch, bot calls per 100 messages, and the
median / p90 wait added for single-message users.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.batching import close_at  # noqa: E402

Policy = Callable[[float, float], float]  # (first, last) arrival -> close time


@dataclass
class Result:
    pairs: int = 0
    merged: int = 0
    messages: int = 0
    batches: int = 0
    single_waits: list[float] | None = None


def trace(conversations: int, seed: int) -> list[list[float]]:
    """Arrival times of each conversation's fragments (one burst each)."""
    rng = random.Random(seed)
    bursts = []
    for _ in range(conversations):
        if rng.random() < 0.8:
            bursts.append([0.0])
            continue
        low, high = (1.0, 3.0) if rng.random() < 0.5 else (5.0, 17.0)
        times = [0.0]
        for _ in range(rng.randint(1, 4)):
            times.append(times[-1] + rng.uniform(low, high))
        bursts.append(times)
    return bursts


def replay(bursts: list[list[float]], policy: Policy) -> Result:
    result = Result(single_waits=[])
    for times in bursts:
        result.messages += len(times)
        result.pairs += len(times) - 1
        first = last = times[0]
        result.batches += 1
        for arrival in times[1:]:
            if arrival <= policy(first, last):
                result.merged += 1
                last = arrival
            else:
                result.batches += 1
                first = last = arrival
        if len(times) == 1:
            result.single_waits.append(policy(times[0], times[0]) - times[0])
    return result


def fixed(window: float) -> Policy:
    return lambda first, last: first + window


def sliding(window: float, max_wait: float) -> Policy:
    return lambda first, last: close_at(first, last, window, max_wait)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    bursts = trace(args.conversations, args.seed)
    policies = {
        "fixed 3 s": fixed(3),
        "fixed 10 s": fixed(10),
        "sliding 10 s (max 30 s)": sliding(10, 30),
        "sliding 18 s (max 60 s)": sliding(18, 60),
    }
    print(f"conversations={args.conversations} seed={args.seed} (80 % single messages)")
    print(f"{'policy':26} {'pairs merged':>13} {'bot calls/100 msgs':>19} {'single wait p50':>16} {'p90':>6}")
    for name, policy in policies.items():
        r = replay(bursts, policy)
        waits = sorted(r.single_waits or [0.0])
        p90 = waits[int(0.9 * (len(waits) - 1))]
        print(
            f"{name:26} {r.merged / r.pairs:13.1%} {100 * r.batches / r.messages:19.1f}"
            f" {statistics.median(waits):15.1f}s {p90:5.1f}s"
        )


if __name__ == "__main__":
    main()
