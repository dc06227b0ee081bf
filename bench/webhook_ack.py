"""Webhook acknowledgement: the gateway vs a bare Flask endpoint, same gunicorn.

    .venv/bin/python bench/webhook_ack.py [--requests 3000] [--threads 8] [--rounds 3]

Starts its own redis-server on a free port, then alternates rounds of the bare
endpoint and the gateway (each under gunicorn with WEB_CONCURRENCY workers),
sending signed `message_created` webhooks from a thread pool: five fragments
per conversation, so one in five is a batch's first fragment (EVALSHA + publish)
and four join a batch (one EVALSHA). No worker runs: the messages stay queued.
Prints medians over the rounds of throughput and p50/p99 latency, and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.signature import sign  # noqa: E402

SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def gunicorn(target: str, port: int, env: dict[str, str], workers: int) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    return subprocess.Popen(
        [str(bin_dir / "gunicorn"), target, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_runs: dict[str, int] = {}


def payload(i: int, run: str) -> bytes:
    base = _runs.setdefault(run, len(_runs) * 1_000_000)
    conversation = base + i // 5
    body = {
        "event": "message_created",
        "id": base + i + 1,
        "message_type": "incoming",
        "private": False,
        "content": f"fragment {i} of run {run}",
        "sender": {"id": 301, "type": "contact", "name": "Maria"},
        "account": {"id": 1},
        "inbox": {"id": 4},
        "conversation": {"id": conversation, "status": "pending"},
    }
    return json.dumps(body).encode()


def load(url: str, n: int, threads: int, run: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def client() -> None:
        session = requests.Session()
        mine = []
        for i in counter:
            body = payload(i, run)
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Chatwoot-Timestamp": ts,
                "X-Chatwoot-Signature": sign(SECRET, ts, body),
            }
            start = time.perf_counter()
            response = session.post(url, data=body, headers=headers, timeout=10)
            mine.append(time.perf_counter() - start)
            if response.status_code != 202:
                raise RuntimeError(f"{response.status_code} {response.text}")
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return n / (time.perf_counter() - started), latencies


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    redis_port = free_port()
    redis = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
        ],
        stdout=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CHATWOOT_WEBHOOK_SECRET": SECRET,
        "BATCH_WINDOW_SECONDS": "60",
        "BATCH_MAX_WAIT_SECONDS": "120",
        "LOG_LEVEL": "WARNING",
    }
    results: dict[str, list[tuple[float, float, float]]] = {"bare": [], "gateway": []}
    try:
        for rnd in range(args.rounds):
            for name, target in (("bare", "bench.bare_app:app"), ("gateway", "wsgi:app")):
                port = free_port()
                proc = gunicorn(target, port, env, args.workers)
                try:
                    wait_http(f"http://127.0.0.1:{port}/healthz")
                    url = f"http://127.0.0.1:{port}/webhook/chatwoot/default"
                    load(url, 200, args.threads, f"warm{rnd}{name}")
                    rps, lat = load(url, args.requests, args.threads, f"r{rnd}{name}")
                    results[name].append((rps, pct(lat, 0.5), pct(lat, 0.99)))
                finally:
                    proc.terminate()
                    proc.wait()
                subprocess.run(["redis-cli", "-p", str(redis_port), "flushall"], stdout=subprocess.DEVNULL)
    finally:
        redis.terminate()
    med = {name: [statistics.median(r[i] for r in rows) for i in range(3)] for name, rows in results.items()}
    print(
        f"requests={args.requests} threads={args.threads} rounds={args.rounds}"
        f" gunicorn workers={args.workers}"
    )
    print(f"{'':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (rps, p50, p99) in med.items():
        print(f"{name:8} {rps:8.0f} {p50:8.2f} {p99:8.2f}")
    (brps, _, bp99), (grps, _, gp99) = med["bare"], med["gateway"]
    print(f"throughput ratio gateway/bare = {grps / brps:.2f}; p99 ratio gateway/bare = {gp99 / bp99:.2f}")


if __name__ == "__main__":
    main()
