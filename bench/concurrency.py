"""Many conversations at once with a bot as slow as an LLM: what the container serves.

    .venv/bin/python bench/concurrency.py [--contacts 100] [--bot-seconds 3] [--spread 3]
                                          [--window 1] [--settings default solo threads-16 ...]

For each setting: a fresh redis-server (append-only, fsync always, as the embedded
one), the local Chatwoot stand-in with an http bot that takes ``--bot-seconds`` to
answer, and start.sh booted as the container runs it (HAProxy on $PORT, gunicorn, the
Celery worker with its defaults unless the setting names a pool). ``--contacts``
contacts each write one message at a random moment within ``--spread`` seconds,
as signed ``message_created`` webhooks to the public port; ``BATCH_WINDOW_SECONDS``
is ``--window`` (its own wait is not the subject here).

Measured from what reaches the stand-ins: each contact's wait beyond the window (its
reply's arrival at Chatwoot minus its webhook's send time minus the window), its
p50/p90/p99/max; the most bot calls in flight at once; whether every contact was
answered exactly once; and the peak RSS of the container's processes (start.sh and
everything it started; the Redis server, external here, apart).

A setting is ``default`` (the container's own CELERY_POOL and CELERY_CONCURRENCY),
``solo`` (CELERY_POOL=solo, one slot: the design card's worker) or ``threads-N``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.batching_live import stop  # noqa: E402
from bench.common import free_port, wait_http  # noqa: E402
from tests import chatwoot_payloads as cw  # noqa: E402
from tests.conftest import SECRET, signed_headers  # noqa: E402
from tests.support import RedisServer, Stand, boot_start_sh  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class SlowBot:
    """The http bot's answer: ``seconds`` of thinking; counts the calls in flight."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.lock = seconds, threading.Lock()
        self.in_flight = self.most = self.calls = 0

    def __call__(self, body: dict) -> dict:
        with self.lock:
            self.in_flight += 1
            self.calls += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(self.seconds)
            return {"reply": f"answer to {body['text']}"}
        finally:
            with self.lock:
                self.in_flight -= 1


def setting_env(name: str) -> dict[str, str]:
    if name == "default":
        return {}
    if name == "solo":
        return {"CELERY_POOL": "solo", "CELERY_CONCURRENCY": "1"}
    pool, _, size = name.partition("-")
    return {"CELERY_POOL": pool, "CELERY_CONCURRENCY": size}


def run(name: str, args: argparse.Namespace, folder: Path) -> dict[str, object]:
    (folder / f"redis-{name}").mkdir()
    server = RedisServer(folder / f"redis-{name}", persistent=True)
    server.start()
    stand = Stand()
    bot = SlowBot(args.bot_seconds)
    stand.bot_answer = bot
    port = free_port()
    env = {
        "REDIS_URL": server.url,
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),
        "DATA_DIR": str(folder / f"data-{name}"),
        "CHATWOOT_BASE_URL": stand.url,
        "CHATWOOT_API_TOKEN": "cw-token",
        "CHATWOOT_WEBHOOK_SECRET": SECRET,
        "BOT_BACKEND": "http",
        "BOT_URL": f"{stand.url}/bot",
        "BATCH_WINDOW_SECONDS": str(args.window),
        "LOG_LEVEL": "WARNING",
        **setting_env(name),
    }
    proc = boot_start_sh(env, folder / f"start-{name}.log")
    peak = {"rss": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["rss"] = max(peak["rss"], sum(rss_mb(p) for p in tree(proc.pid)))
            time.sleep(0.1)

    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
        time.sleep(1.0)
        at_rest = sum(rss_mb(p) for p in tree(proc.pid))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rng = random.Random(args.seed)
        url = f"http://127.0.0.1:{port}/webhook/chatwoot/default"
        sent: dict[int, float] = {}
        start = time.time() + 0.5

        def write(conversation: int, delay: float) -> None:
            body = json.dumps(cw.message(f"question {conversation}", conversation)).encode()
            time.sleep(max(0.0, start + delay - time.time()))
            sent[conversation] = time.time()
            response = requests.post(url, data=body, headers=signed_headers(body), timeout=10)
            assert response.status_code == 202, response.text

        conversations = range(20_000, 20_000 + args.contacts)
        writers = [
            threading.Thread(target=write, args=(c, rng.uniform(0, args.spread))) for c in conversations
        ]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        deadline = time.time() + args.contacts * args.bot_seconds + 120
        while time.time() < deadline and len(stand.replies()) < args.contacts:
            time.sleep(0.2)
        time.sleep(1.0)  # nothing more comes
        done.set()
        sampler.join()
        replies = stand.message_times()
        waits = [replies[c][0] - sent[c] - args.window for c in conversations if replies.get(c)]
        return {
            "setting": name,
            "answered": sum(len(replies.get(c, [])) == 1 for c in conversations),
            "twice": sum(len(replies.get(c, [])) > 1 for c in conversations),
            "p50": statistics.median(waits) if waits else float("nan"),
            "p90": percentile(waits, 0.9) if waits else float("nan"),
            "p99": percentile(waits, 0.99) if waits else float("nan"),
            "max": max(waits) if waits else float("nan"),
            "in_flight": bot.most,
            "bot_calls": bot.calls,
            "rss_rest": at_rest,
            "rss_peak": peak["rss"],
        }
    finally:
        done.set()
        stop(proc)
        stand.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100)
    parser.add_argument("--bot-seconds", type=float, default=3.0)
    parser.add_argument("--spread", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=["default"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="concurrency-"))
    print(
        f"{args.contacts} contacts, one message each within {args.spread:g} s; bot {args.bot_seconds:g} s;"
        f" window {args.window:g} s"
    )
    print(
        f"{'setting':12} {'answered':>9} {'twice':>5} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}"
        f" {'in flight':>9} {'RSS rest':>9} {'RSS peak':>9}"
    )
    for name in args.settings:
        r = run(name, args, folder)
        print(
            f"{r['setting']:12} {r['answered']:>9} {r['twice']:>5} {r['p50']:6.1f}s {r['p90']:6.1f}s"
            f" {r['p99']:6.1f}s {r['max']:6.1f}s {r['in_flight']:>9}"
            f" {r['rss_rest']:7.0f}MB {r['rss_peak']:7.0f}MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
