"""Drain rate: how many batches per second one solo worker answers.

    .venv/bin/python bench/drain_rate.py [--conversations 1000] [--fragments 2]

A real redis-server, the tests' local Chatwoot stand-in, the echo bot. Every
conversation's fragments are accepted through the real webhook path (signed
bodies, the ENQUEUE script, the drain task published with its countdown)
while no worker runs; then one solo worker (``--pool solo``, one process,
one thread) starts and drains them all. The rate is counted between the
first and the last reply reaching Chatwoot, so worker start-up is not in it.
Each batch costs the worker: the task, the claim, the bot, three Chatwoot
calls (typing on, the message, typing off) and the completion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.settings import load_settings  # noqa: E402
from app.web import create_app  # noqa: E402
from bench.stack import local_stack  # noqa: E402
from tests import chatwoot_payloads as cw  # noqa: E402
from tests.conftest import signed_headers  # noqa: E402
from tests.support import Worker, wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--fragments", type=int, default=2, help="text fragments per conversation")
    parser.add_argument("--window", type=float, default=0.2)
    parser.add_argument("--pool", default="solo", help="solo (the goal's setting) or threads")
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    with local_stack(
        BOT_BACKEND="echo", BATCH_WINDOW_SECONDS=str(args.window), BATCH_MAX_WAIT_SECONDS=str(args.window * 4)
    ) as stack:
        stand, client = stack.stand, stack.client
        web = create_app({"settings": load_settings(stack.env)}).test_client()
        conversations = [700000 + i for i in range(args.conversations)]
        for fragment in range(args.fragments):
            for conv in conversations:
                body = json.dumps(cw.message(f"part {fragment} of {conv}", conv)).encode()
                response = web.post("/webhook/chatwoot/default", data=body, headers=signed_headers(body))
                assert response.status_code == 202, response.json
        time.sleep(args.window * 4)  # every batch is due before the worker starts
        prefetch = 4 if args.pool == "threads" else 1  # start.sh's default
        worker = Worker(
            stack.env, "drain-bench", pool=args.pool, concurrency=args.concurrency, prefetch=prefetch
        )
        worker.start(client)
        client.config_resetstat()
        try:
            wait_for(
                lambda: len(stand.replies()) >= args.conversations,
                timeout=30 + args.conversations / 10,
                interval=0.05,
            )
            time.sleep(0.5)
            replies = stand.calls("messages")
            commands = {
                name.removeprefix("cmdstat_"): stat["calls"]
                for name, stat in client.info("commandstats").items()
                if name.startswith("cmdstat_")
            }
        finally:
            worker.stop()
    answered = {r["path"] for r in replies}
    assert len(replies) == args.conversations == len(answered), "one reply per conversation"
    merged = all(r["json"]["content"].count("part ") == args.fragments for r in replies)
    span = max(r["at"] for r in replies) - min(r["at"] for r in replies)
    batches = args.conversations / span
    print(
        f"conversations={args.conversations} fragments={args.fragments} worker --pool {args.pool}"
        f" --concurrency {args.concurrency}, echo bot,"
        f" local Chatwoot: {len(replies)} replies in {span:.2f} s"
    )
    print(
        f"drain rate: {batches:.0f} batches/s, {batches * args.fragments:.0f} messages/s"
        f" (every batch held all its fragments: {merged})"
    )
    per_batch = sorted(((calls / args.conversations, name) for name, calls in commands.items()), reverse=True)
    print(
        f"Redis commands per batch (worker and broker, idle polling included):"
        f" {sum(c for c, _ in per_batch):.1f} = "
        + ", ".join(f"{name} {c:.1f}" for c, name in per_batch if c >= 0.05)
    )


if __name__ == "__main__":
    main()
