"""Footprint: process memory at rest and under load, Redis bytes per queued message.

    .venv/bin/python bench/footprint.py [--conversations 300] [--fragments 5]

A real redis-server, the tests' local Chatwoot, gunicorn (2 workers, as
start.sh runs it) and one solo Celery worker with the echo bot.
* RSS (``/proc/<pid>/status`` VmRSS) of the worker and of each gunicorn
  process, after start-up (at rest) and at its peak while
  ``conversations x fragments`` realistic Chatwoot webhooks (the WhatsApp
  payload of the tests, about 1.6 KB each) are posted from 8 threads and drained.
* Redis: the same webhooks posted with no worker running, then
  ``MEMORY USAGE`` of every queue, and of the de-duplication markers the
  webhook writes per message, divided by the number of queued messages and
  compared with the payload's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.webhook_ack import free_port, gunicorn, wait_http  # noqa: E402
from tests import chatwoot_payloads as cw  # noqa: E402
from tests.conftest import base_env, signed_headers  # noqa: E402
from tests.support import RedisServer, Stand, Worker, wait_for  # noqa: E402


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


def post_all(url: str, payloads: list[bytes]) -> None:
    session = requests.Session()

    def post(body: bytes) -> None:
        response = session.post(url, data=body, headers=signed_headers(body), timeout=10)
        assert response.status_code == 202, response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, payloads))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--fragments", type=int, default=5)
    args = parser.parse_args()
    server = RedisServer(Path(tempfile.mkdtemp()))
    server.start()
    stand = Stand()
    env = base_env(
        server.url,
        stand.url,
        BOT_BACKEND="echo",
        BATCH_WINDOW_SECONDS="0.5",
        BATCH_MAX_WAIT_SECONDS="2",
        LEASE_TTL_SECONDS="30",
        LOG_LEVEL="WARNING",
        TEST_LOG_DIR=tempfile.mkdtemp(),
    )
    client = redis.Redis.from_url(server.url)
    port = free_port()
    web = gunicorn("wsgi:app", port, env, workers=2)
    url = f"http://127.0.0.1:{port}/webhook/chatwoot/default"
    worker = None
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        # Redis bytes per queued message: nothing drains yet.
        queued = bodies(args.conversations, args.fragments, 100000)
        post_all(url, queued)
        queue_keys = list(client.scan_iter("default:webhook_queue:*", count=1000))
        messages = sum(client.llen(k) for k in queue_keys)
        queue_bytes = sum(client.memory_usage(k, samples=0) or 0 for k in queue_keys)
        seen_keys = list(client.scan_iter("default:webhook_seen*", count=1000))
        seen_bytes = sum(client.memory_usage(k, samples=0) or 0 for k in seen_keys)
        payload = statistics.median(len(b) for b in queued)
        stored = statistics.median(len(x) for x in client.lrange(queue_keys[0], 0, -1))
        client.flushdb()

        gunicorn_pids = [web.pid, *children(web.pid)]
        worker = Worker(env, "footprint", beat=True).start(client)  # -B, as start.sh runs it
        time.sleep(2)
        beat = children(worker.proc.pid)
        rest = {"worker": rss_mb(worker.proc.pid), **{f"web {p}": rss_mb(p) for p in gunicorn_pids}}
        rest.update({f"beat {p}": rss_mb(p) for p in beat})
        peak = dict(rest)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                named = [("worker", worker.proc.pid), *((f"web {p}", p) for p in gunicorn_pids)]
                for name, pid in named + [(f"beat {p}", p) for p in beat]:
                    peak[name] = max(peak[name], rss_mb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = bodies(args.conversations, args.fragments, 500000)
        post_all(url, load)
        wait_for(lambda: len(stand.replies()) >= args.conversations, timeout=300, interval=0.2)
        done.set()
        sampler.join()
    finally:
        if worker:
            worker.stop()
        web.terminate()
        web.wait(timeout=10)
        stand.close()
        server.stop()

    print(
        f"load: {args.conversations} conversations x {args.fragments} fragments"
        f" ({args.conversations * args.fragments} webhooks), solo worker, gunicorn 2 workers"
    )
    print(f"{'process':16} {'RSS at rest':>12} {'RSS peak under load':>20}")
    for name in rest:
        label = {"worker": "worker (solo)", f"web {web.pid}": "gunicorn master"}.get(name, "gunicorn worker")
        label = "worker's beat" if name.startswith("beat") else label
        print(f"{label:16} {rest[name]:10.1f} MB {peak[name]:18.1f} MB")
    per_message, with_seen = queue_bytes / messages, (queue_bytes + seen_bytes) / messages
    print(
        f"Redis: {messages} queued messages; payload {payload:.0f} B, stored entry {stored:.0f} B;"
        f" queue lists {per_message:.0f} B/message ({per_message / payload:.2f}x payload);"
        f" with the de-duplication markers {with_seen:.0f} B/message ({with_seen / payload:.2f}x payload)"
    )


if __name__ == "__main__":
    main()
