"""End-to-end overhead: time from the 202 to the reply at a local Chatwoot, minus the window.

    .venv/bin/python bench/e2e_overhead.py [--messages 200] [--window 0.5]

A real redis-server, a real solo Celery worker, the echo bot, and the tests'
local Chatwoot stand-in. Single messages on distinct conversations, sent one
at a time (each waits the window once), so the figure is the gateway's own
overhead: scheduling, claim, bot, POST, completion.
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--window", type=float, default=0.5)
    args = parser.parse_args()
    overheads = []
    with local_stack(
        BOT_BACKEND="echo", BATCH_WINDOW_SECONDS=str(args.window), BATCH_MAX_WAIT_SECONDS=str(args.window * 4)
    ) as stack:
        stand = stack.stand
        worker = Worker(stack.env, "bench").start(stack.client)
        web = create_app({"settings": load_settings(stack.env)}).test_client()
        try:
            for i in range(args.messages):
                conv = 500000 + i
                body = json.dumps(cw.message(f"hello {i}", conv)).encode()
                response = web.post("/webhook/chatwoot/default", data=body, headers=signed_headers(body))
                accepted = time.time()
                assert response.status_code == 202, response.json
                wait_for(lambda c=conv: stand.replies(c), timeout=30, interval=0.002)
                reply_at = next(
                    r["at"] for r in stand.calls("messages") if f"/conversations/{conv}/" in r["path"]
                )
                overheads.append((reply_at - accepted - args.window) * 1000)
        finally:
            worker.stop()
    overheads.sort()
    p99 = overheads[min(len(overheads) - 1, int(0.99 * len(overheads)))]
    print(f"messages={args.messages} window={args.window}s solo worker, echo bot, local Chatwoot")
    print(
        f"overhead beyond the window: p50={statistics.median(overheads):.1f} ms  p99={p99:.1f} ms  "
        f"max={overheads[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
