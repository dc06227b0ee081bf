"""Scale-out: a slow bot (1 s per call) and many conversations at once.

    .venv/bin/python bench/scale_out.py [--conversations 200] [--bot-seconds 1]
                                        [--modes solo,threads32,processes2]

A real redis-server, gunicorn (2 workers, as start.sh runs it), the tests'
local Chatwoot and HTTP bot (the bot sleeps ``--bot-seconds`` per call), and
real Celery workers: one solo worker; one worker with ``--pool threads
--concurrency 32`` (prefetch 4, start.sh's default for threads); two solo
worker processes. Every conversation sends two fragments, in order, from 8
client threads; the wall time runs from the first webhook to the last reply and is compared with the ideal
``conversations x bot seconds / concurrency``. While it runs, the stand-in
records, per conversation, how many bot calls were in flight at once; after
it, every conversation must have exactly one reply holding both fragments in
order. Any breach is printed and fails the run. (A second bot call for a
conversation is legitimate: a fragment that lands while the bot thinks makes
the gateway drop the stale answer and ask again with both.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.stack import gunicorn_web, local_stack, post_in_order  # noqa: E402
from tests import chatwoot_payloads as cw  # noqa: E402
from tests.support import Worker, wait_for  # noqa: E402

MODES = {  # name -> (pool, concurrency per worker, worker processes, prefetch as start.sh sets it)
    "solo": ("solo", 1, 1, 1),
    "threads32": ("threads", 32, 1, 4),
    "processes2": ("solo", 1, 2, 1),
}


def run(
    mode: str, conversations: int, bot_seconds: float, window: float
) -> tuple[float, float, int, list[str]]:
    pool, concurrency, processes, prefetch = MODES[mode]
    with local_stack(
        BATCH_WINDOW_SECONDS=str(window),
        BATCH_MAX_WAIT_SECONDS=str(window * 4),
        BOT_TIMEOUT_SECONDS=str(bot_seconds * 10),
        LEASE_TTL_SECONDS="10",
    ) as stack:
        stand = stack.stand
        stand.bot_delay = bot_seconds
        workers = [
            Worker(stack.env, f"scale-{mode}-{i}", pool, concurrency=concurrency, prefetch=prefetch)
            for i in range(processes)
        ]
        try:
            for worker in workers:
                worker.start(stack.client)
            with gunicorn_web(stack.env) as (_, url):
                convs = [900000 + i for i in range(conversations)]
                texts = {c: [f"first of {c}", f"second of {c}"] for c in convs}
                # each conversation's two fragments in order, as Chatwoot sends them
                bodies = [[json.dumps(cw.message(t, c)).encode() for t in texts[c]] for c in convs]
                started = time.time()
                post_in_order(url, bodies)
                ideal = conversations * bot_seconds / (concurrency * processes)
                wait_for(lambda: len(stand.replies()) >= conversations, timeout=ideal * 3 + 60, interval=0.1)
                wall = max(r["at"] for r in stand.calls("messages")) - started
                time.sleep(1.0)  # anything answered twice would show now
        finally:
            for worker in workers:
                worker.stop()
        breaches = []
        for conv in convs:
            replies = stand.replies(conv)
            if replies != [" ".join(texts[conv])]:
                breaches.append(f"conversation {conv}: replies {replies}")
            if stand.max_in_flight[str(conv)] > 1:
                breaches.append(f"conversation {conv}: {stand.max_in_flight[str(conv)]} bot calls at once")
        return wall, ideal, len(stand.bot_calls), breaches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--bot-seconds", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=0.2)
    parser.add_argument("--modes", default="solo,threads32,processes2")
    args = parser.parse_args()
    print(
        f"conversations={args.conversations} (2 fragments each) bot={args.bot_seconds}s window={args.window}s"
    )
    print(
        f"{'mode':12} {'concurrency':>11} {'wall':>8} {'ideal':>8} {'ratio':>6} {'bot calls':>9}  invariants"
    )
    failed = False
    for mode in args.modes.split(","):
        wall, ideal, calls, breaches = run(mode, args.conversations, args.bot_seconds, args.window)
        _, concurrency, processes, _ = MODES[mode]
        verdict = "ok" if not breaches else f"{len(breaches)} BREACHES: " + "; ".join(breaches[:5])
        print(
            f"{mode:12} {concurrency * processes:>11} {wall:7.1f}s {ideal:7.1f}s {wall / ideal:6.2f}"
            f" {calls:>9}  {verdict}",
            flush=True,
        )
        failed |= bool(breaches)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
