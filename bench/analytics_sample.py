"""Draw docs/analytics-sample.png from a seeded synthetic trace.

    .venv/bin/python bench/analytics_sample.py

Conversations of fast typists (gaps 1-3 s) and slow typists (5-17 s), with a
new topic every few minutes, recorded through the same code the worker uses
(fakeredis stands in for Redis: this is documentation, not a measurement).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import fakeredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.batching.analytics import record_gaps  # noqa: E402
from app.batching.report import plot, report  # noqa: E402
from app.metrics import Histogram, observe  # noqa: E402


def main() -> None:
    rng = random.Random(7)
    client = fakeredis.FakeRedis(decode_responses=True)
    for conv in range(400):
        slow = rng.random() < 0.5
        now = 0.0
        for _topic in range(rng.randint(1, 3)):
            burst = [now]
            for _ in range(rng.choice([0, 0, 1, 2, 3])):
                now += rng.uniform(5, 17) if slow else rng.uniform(1, 3)
                burst.append(now)
            record_gaps(client, "default", str(conv), burst)
            observe(client, "default", Histogram.BATCH_SIZE, len(burst))
            now += rng.uniform(120, 900)
    result = report(client, "default", window=10)
    print(result.text())
    out = ROOT / "docs" / "analytics-sample.png"
    plot(result, str(out))
    print(f"written {out}")


if __name__ == "__main__":
    main()
