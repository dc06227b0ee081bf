"""Footprint: process memory at rest and under load, Redis bytes per queued message.

    .venv/bin/python bench/footprint.py [--conversations 300] [--fragments 5] [--redis-only]

A real redis-server, the tests' local Chatwoot, gunicorn (2 workers, as
start.sh runs it) and one solo Celery worker with the echo bot.
* RSS (``/proc/<pid>/status`` VmRSS) of the worker and of each gunicorn
  process, after start-up (at rest) and at its peak while
  ``conversations x fragments`` realistic Chatwoot webhooks (the WhatsApp
  payload of the tests, about 1.6 KB each) are posted from 8 threads and drained.
* Redis: the same webhooks posted with no worker running, each with its own
  ``X-Chatwoot-Delivery`` id as signed deliveries carry; the growth of Redis's
  ``used_memory`` divided by the number of queued messages (everything a message
  costs: its queue entry, its message and delivery de-duplication markers with
  their expiry entries, the conversation's session and index entries), and the
  ``MEMORY USAGE`` of the queues and of the markers for a breakdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.stack import gunicorn_web, local_stack, post_in_order  # noqa: E402
from tests import chatwoot_payloads as cw  # noqa: E402
from tests.support import Worker, wait_for  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def bodies(conversations: int, fragments: int, base: int) -> list[bytes]:
    return [
        json.dumps(cw.message(f"fragment {f} of conversation {c}: I would like to book", base + c)).encode()
        for f in range(fragments)
        for c in range(conversations)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--fragments", type=int, default=5)
    parser.add_argument("--redis-only", action="store_true", help="only the Redis bytes per message")
    args = parser.parse_args()
    with (
        local_stack(
            BOT_BACKEND="echo", BATCH_WINDOW_SECONDS="0.5", BATCH_MAX_WAIT_SECONDS="2", LEASE_TTL_SECONDS="30"
        ) as stack,
        gunicorn_web(stack.env) as (web, url),
    ):
        client = stack.client
        # Redis bytes per queued message: nothing drains yet.
        queued = bodies(args.conversations, args.fragments, 100000)
        post_in_order(url, [[queued[0]]], deliveries=True)  # scripts loaded, first keys made
        client.flushdb()
        before = client.info("memory")["used_memory"]
        post_in_order(url, [[body] for body in queued], deliveries=True)
        grown = client.info("memory")["used_memory"] - before
        queue_keys = list(client.scan_iter("default:webhook_queue:*", count=1000))
        messages = sum(client.llen(k) for k in queue_keys)
        queue_bytes = sum(client.memory_usage(k, samples=0) or 0 for k in queue_keys)
        seen_keys = list(client.scan_iter("default:webhook_seen*", count=1000))
        seen_bytes = sum(client.memory_usage(k, samples=0) or 0 for k in seen_keys)
        names = [k.decode() if isinstance(k, bytes) else k for k in client.scan_iter("*", count=1000)]
        others = [k for k in names if not k.startswith(("default:webhook_queue:", "default:webhook_seen"))]
        broker_bytes = sum(
            client.memory_usage(k, samples=0) or 0 for k in others if not k.startswith("default:")
        )
        conversation_bytes = sum(
            client.memory_usage(k, samples=0) or 0 for k in others if k.startswith("default:")
        )
        payload = statistics.median(len(b) for b in queued)
        stored = statistics.median(len(x) for x in client.lrange(queue_keys[0], 0, -1))
        client.flushdb()
        per_message, markers, total = queue_bytes / messages, seen_bytes / messages, grown / messages
        print(
            f"Redis: {messages} queued messages; payload {payload:.0f} B, stored entry {stored:.0f} B;"
            f" used_memory grew {total:.0f} B/message ({total / payload:.2f}x payload);"
            f" MEMORY USAGE: queue lists {per_message:.0f} B/message,"
            f" de-duplication markers {markers:.0f} B/message ({len(seen_keys) / messages:.0f} keys each),"
            f" per-conversation keys (lease, index, session) {conversation_bytes / messages:.0f} B/message,"
            f" Celery's published drain tasks {broker_bytes / messages:.0f} B/message"
        )
        if args.redis_only:
            return

        gunicorn_pids = [web.pid, *children(web.pid)]
        worker = Worker(stack.env, "footprint", housekeeping=True).start(client)  # as start.sh runs it
        try:
            time.sleep(2)
            rest = {"worker": rss_mb(worker.proc.pid), **{f"web {p}": rss_mb(p) for p in gunicorn_pids}}
            peak = dict(rest)
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    named = [("worker", worker.proc.pid), *((f"web {p}", p) for p in gunicorn_pids)]
                    for name, pid in named:
                        peak[name] = max(peak[name], rss_mb(pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            post_in_order(url, [[body] for body in bodies(args.conversations, args.fragments, 500000)])
            wait_for(lambda: len(stack.stand.replies()) >= args.conversations, timeout=300, interval=0.2)
            done.set()
            sampler.join()
        finally:
            worker.stop()

    print(
        f"load: {args.conversations} conversations x {args.fragments} fragments"
        f" ({args.conversations * args.fragments} webhooks), solo worker, gunicorn 2 workers"
    )
    print(f"{'process':16} {'RSS at rest':>12} {'RSS peak under load':>20}")
    for name in rest:
        label = {"worker": "worker (solo)", f"web {web.pid}": "gunicorn master"}.get(name, "gunicorn worker")
        print(f"{label:16} {rest[name]:10.1f} MB {peak[name]:18.1f} MB")


if __name__ == "__main__":
    main()
