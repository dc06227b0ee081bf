"""Webhook acknowledgement: the gateway vs baselines, same gunicorn, a C client.

    .venv/bin/python bench/webhook_ack.py [--seconds 5] [--connections 16] [--rounds 3]
        [--targets bare seed gateway gateway-public] [--proxy]

Targets: ``bare`` (Flask parsing the JSON and answering 202), ``seed`` (the seed's naive
design: an RPUSH, an EXPIRE and a Celery publish per message, bench/seed_app.py),
``gateway`` (its internal gunicorn port) and ``gateway-public`` (the same behind the
container's HAProxy, as the public port runs).

The load comes from ``wrk`` (Debian's package; ``make bench`` installs it), so
the client does not take the cores the server needs, as a Python client did.
Each round starts the target under gunicorn (``WEB_CONCURRENCY`` workers; the gateway
with deploy/gunicorn.conf.py as start.sh runs it, the baselines with gunicorn's
defaults, sync workers, as the seed ran) and sends pre-signed, realistic
``message_created`` webhooks (the tests' WhatsApp payload, about 1.6 KB), every one a new message: 60 % of
conversations get one fragment, the rest 2 to 5. For the gateway a Celery worker
runs beside it as start.sh runs it (a threads pool of 64, prefetch 4, housekeeping on,
the dispatcher draining
with the echo bot into the dry-run outbox) and a fresh redis-server holds the
queues. The gateway runs with its defaults: LOG_LEVEL INFO (a line per queued
message) and gunicorn's access log, written where the bench discards them. With
``--consumers on`` (the default) the seed's own worker consumes its tasks beside it
(bench/seed_app.py); ``off`` measures the ack path alone. Rounds alternate between
the targets; medians of throughput and of wrk's p50/p99 latency are printed, with the
ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.chatwoot.signature import sign  # noqa: E402
from bench.common import free_port, gunicorn, wait_http  # noqa: E402
from tests import chatwoot_payloads as cw  # noqa: E402
from tests.support import RedisServer, Worker  # noqa: E402

SECRET = "bench-secret"
PATH = "/webhook/chatwoot/default"


def request_file(folder: Path, name: str, count: int, base: int, rng: random.Random) -> Path:
    """``count`` pre-signed webhooks, new messages of conversations of 1 (60 %) to 5 fragments."""
    lines, conversation, message_id = [], base, base
    ts = str(int(time.time()))
    while len(lines) < count:
        conversation += 1
        fragments = 1 if rng.random() < 0.6 else rng.randint(2, 5)
        for i in range(fragments):
            message_id += 1
            body = json.dumps(
                cw.message(
                    f"fragment {i} of a conversation: I would like to book",
                    conversation,
                    message_id=message_id,
                )
            )
            lines.append(f"{PATH}\t{ts}\t{sign(SECRET, ts, body.encode())}\t{body}")
    path = folder / f"{name}.requests"
    path.write_text("\n".join(lines[:count]) + "\n")
    return path


def run_wrk(
    url: str, requests: Path, seconds: float, connections: int, threads: int
) -> tuple[float, float, float]:
    out = subprocess.run(
        [
            shutil.which("wrk") or "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "wrk_cycle.lua"),
            url,
            "--",
            str(requests),
            str(threads),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "EXHAUSTED" in out:
        raise RuntimeError("the request file ran out: raise --per-round")
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx answers:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _latency(out, "50%"), _latency(out, "99%")


def _latency(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (WEB_CONCURRENCY)")
    parser.add_argument("--per-round", type=int, default=40_000, help="pre-signed requests per round")
    parser.add_argument("--window", type=float, default=2.0, help="BATCH_WINDOW_SECONDS, consumers on")
    parser.add_argument(
        "--consumers",
        choices=["on", "off"],
        default="on",
        help="on: each design's worker consumes beside its web, as in production (the gateway's"
        " drains batches, the seed's runs a drain task per message); off: the ack path alone (no"
        " seed worker; the gateway's window is 60 s, so its worker idles through the run)",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="put the container's proxy (deploy/haproxy.cfg) in front of every target",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        default=["bare", "gateway"],
        choices=["bare", "seed", "gateway", "gateway-public"],
        help="seed: the seed's naive design (RPUSH + EXPIRE + a Celery publish); gateway-public:"
        " the gateway behind the container's proxy",
    )
    args = parser.parse_args()
    if args.consumers == "off":
        args.window = 60.0
    folder = Path(tempfile.mkdtemp())
    rng = random.Random(12)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in args.targets}
    apps = {"bare": "bench.bare_app:app", "seed": "bench.seed_app:app"}
    for rnd in range(args.rounds):
        for index, name in enumerate(args.targets):
            requests = request_file(
                folder, f"{name}{rnd}", args.per_round, (rnd * len(args.targets) + index) * 10**6, rng
            )
            server = RedisServer(Path(tempfile.mkdtemp()))
            server.start()
            env = {
                **os.environ,
                "REDIS_URL": server.url,
                "CHATWOOT_WEBHOOK_SECRET": SECRET,
                "BATCH_WINDOW_SECONDS": str(args.window),
                "BATCH_MAX_WAIT_SECONDS": str(max(10.0, args.window * 2)),
                "DATA_DIR": tempfile.mkdtemp(),
                "TEST_LOG_DIR": tempfile.mkdtemp(),
                "PYTHONPATH": str(ROOT),
            }
            gateway = name.startswith("gateway")
            worker = (
                Worker(
                    env, f"ack-{name}-{rnd}", pool="threads", housekeeping=True, concurrency=64, prefetch=4
                ).start(server_client(server))
                if gateway
                else None
            )
            seed_worker = seed_consumer(env) if name == "seed" and args.consumers == "on" else None
            port = free_port()
            web = gunicorn(
                "wsgi:app" if gateway else apps[name], port, env, args.workers, as_start_sh=gateway
            )
            front = proxy(port) if args.proxy or name == "gateway-public" else None
            target = front[1] if front else port
            try:
                wait_http(f"http://127.0.0.1:{target}/healthz")
                results[name].append(
                    run_wrk(
                        f"http://127.0.0.1:{target}", requests, args.seconds, args.connections, args.threads
                    )
                )
            finally:
                if front:
                    front[0].terminate()
                    front[0].wait(timeout=10)
                web.terminate()
                web.wait(timeout=10)
                if worker:
                    worker.stop()
                if seed_worker:
                    seed_worker.terminate()
                    seed_worker.wait(timeout=10)
                server.stop()
    med = {name: [statistics.median(r[i] for r in rows) for i in range(3)] for name, rows in results.items()}
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, rounds={args.rounds},"
        f" gunicorn workers={args.workers}, gateway as start.sh runs it (gthread, a threads-pool worker),"
        f" consumers {args.consumers}, window {args.window:g} s"
        + (", the container's proxy in front of every target" if args.proxy else "")
    )
    print(f"{'':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (rps, p50, p99) in med.items():
        print(f"{name:8} {rps:8.0f} {p50:8.2f} {p99:8.2f}")
    for name, rows in results.items():
        print(f"  {name} rounds: " + ", ".join(f"{r[0]:.0f} req/s p99 {r[2]:.1f} ms" for r in rows))
    baseline = "seed" if "seed" in med else args.targets[0]
    for name in med:
        if name != baseline:
            print(
                f"throughput ratio {name}/{baseline} = {med[name][0] / med[baseline][0]:.2f};"
                f" p99 ratio {med[name][2] / med[baseline][2]:.2f}"
            )


def proxy(upstream: int) -> tuple[subprocess.Popen, int]:
    """The container's HAProxy (deploy/haproxy.cfg, start.sh's settings) in front of
    ``upstream``, once it listens; (process, its port)."""
    wait_http(f"http://127.0.0.1:{upstream}/healthz")
    port = free_port()
    bufsize = 1024 * 1024 + 16384
    env = {
        "PATH": os.environ["PATH"],
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(upstream),
        "PROXY_BUFSIZE": str(bufsize),
        "PROXY_MAXCONN": str(268435456 // bufsize),
    }
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", "deploy/haproxy.cfg"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def seed_consumer(env: dict[str, str]) -> subprocess.Popen:
    """The seed design's Celery worker (bench/seed_app.py), with start.sh's pool settings."""
    bin_dir = Path(sys.executable).parent
    return subprocess.Popen(
        [
            str(bin_dir / "celery"),
            "-A",
            "bench.seed_app:celery",
            "worker",
            "--pool=threads",
            "--concurrency=64",
            "--prefetch-multiplier=4",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def server_client(server: RedisServer):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(server.url)


if __name__ == "__main__":
    main()
