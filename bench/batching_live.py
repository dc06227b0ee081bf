"""Batching on the live gateway: contacts writing bursts concurrently, in real time.

    .venv/bin/python bench/batching_live.py [--contacts 150] [--modes sliding learned smart]
                                            [--occasional 0.05] [--fast 0.5] [--seed 3]

For each mode: a fresh redis-server, the local Chatwoot stand-in, and start.sh
booted as the container runs it (Caddy on $PORT, gunicorn, one solo Celery worker
with its housekeeping), with the echo bot and the default window settings (window 10 s, max
wait 30 s, min 3 s, max 30 s) but ``BATCH_WINDOW_MODE``.

The contacts are the simulator's (``bench/trace.py``, same population and seed).
A contact's last two bursts are written live: the first within the run's first
20 s, the second 75 s after the first ended (a new burst for the pace); their
earlier bursts are their history, stored as the drainer would have stored it
(``<company>:webhook_pace:<contact>``, and the company's gap counts, from which
the prior is learned), so about half the contacts are new and the rest have some
history. Every fragment is a signed ``message_created`` webhook with the trace's
text (an image with or without its caption, a voice note), sent at its time.

Measured only from what reaches the local Chatwoot: a pair of consecutive
fragments of a burst is merged when no reply was posted between their arrivals;
a single message's wait is the time from its webhook to the first reply after
it. The same contacts, history and timings are then replayed in the simulator
(``bench/batching_quality.py``'s policies, the gateway's own functions, with the
prior the live company learned), and both are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app import analytics, keys  # noqa: E402
from app.pace import Pace  # noqa: E402
from app.replay import Result, company_policy, replay  # noqa: E402
from bench.common import free_port, wait_http  # noqa: E402
from bench.trace import Fragment, Population, trace  # noqa: E402
from tests import chatwoot_payloads as cw  # noqa: E402
from tests.conftest import SECRET, signed_headers  # noqa: E402
from tests.support import RedisServer, Stand, boot_start_sh  # noqa: E402

START_SPREAD = 20.0  # the first live bursts begin within this many seconds
SECOND_BURST_AFTER = 75.0  # seconds after a contact's first live burst ended
HISTORY_CONTACTS = 4000  # the population's other contacts, whose gaps teach the company prior


@dataclass(frozen=True)
class Person:
    contact: int
    conversation: int
    history: list[list[Fragment]]
    live: list[list[Fragment]]  # times relative to the run's start


def people(count: int, population: Population, seed: int) -> list[Person]:
    """The trace's contacts, their last two bursts moved to the run's timeline."""
    rng = random.Random(seed)
    result = []
    for index, bursts in enumerate(trace(count, seed, population)):
        history, live = bursts[:-2], bursts[-2:]
        moved, start = [], rng.uniform(0, START_SPREAD)
        for burst in live:
            shift = start - burst[0].at
            moved.append([replace(f, at=f.at + shift) for f in burst])
            start = moved[-1][-1].at + SECOND_BURST_AFTER
        # history ends a day before the first live burst, as in the trace
        shift = moved[0][0].at - live[0][0].at
        past = [[replace(f, at=f.at + shift) for f in burst] for burst in history]
        result.append(Person(700_000 + index, 5000 + index, past, moved))
    return result


def seed_history(
    client: redis.Redis, persons: list[Person], population: Population, seed: int, t0: float
) -> None:
    """What the drainer would have stored: each contact's pace, and the company's gaps
    (the live contacts' history and the rest of the population's)."""
    for p in persons:
        times = [t0 + f.at for burst in p.history for f in burst]
        if times:
            client.set(keys.pace("default", f"contact-{p.contact}"), Pace().observe(times).to_json())
    others = trace(HISTORY_CONTACTS, seed + 1000, population)
    histories = [b for p in persons for b in p.history] + [b for c in others for b in c]
    for number, burst in enumerate(histories):
        analytics.record_gaps(client, "default", f"history-{number}", [f.at for f in burst])


def webhook(p: Person, f: Fragment) -> bytes:
    sender = {**cw.CONTACT, "id": p.contact, "phone_number": f"+5511{p.contact:09d}"}
    if f.attachment == "image":
        body = cw.image_with_caption(f.text, p.conversation)
        body["content"] = f.text or None
    elif f.attachment == "audio":
        body = cw.audio(None, p.conversation)
    else:
        body = cw.message(f.text, p.conversation)
    body["sender"] = sender
    return json.dumps(body).encode()


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def row(result: Result) -> str:
    merged, calls, p50, p90, end = result.row()
    return (
        f"merged {merged:6.1%} ({result.merged}/{result.pairs})  calls/100 {calls:5.1f}"
        f"  single p50 {p50:5.2f}s p90 {p90:5.2f}s  burst end p50 {end:5.2f}s"
    )


def measure(persons: list[Person], sent: dict[tuple[int, int, int], float], stand: Stand) -> Result:
    """From the replies the local Chatwoot received (their times) and the webhooks' times."""
    replies = stand.message_times()
    result = Result()
    for p in persons:
        posted = sorted(replies.get(p.conversation, []))
        result.batches += len(posted)
        for b, burst in enumerate(p.live):
            times = [sent[(p.contact, b, i)] for i in range(len(burst))]
            result.messages += len(times)
            for a, z in pairwise(times):
                result.pairs += 1
                result.merged += not any(a < r < z for r in posted)
            after = [r - times[-1] for r in posted if r > times[-1]]
            wait = min(after) if after else float("nan")
            (result.single_waits if len(burst) == 1 else result.end_waits).append(wait)
    return result


def simulated(persons: list[Person], mode: str, prior: float) -> Result:
    """The same live bursts replayed in the simulator, after the same history, with the
    default settings."""
    policy = company_policy(mode, 10.0, 3.0, 30.0, 30.0, prior)
    return replay([p.live for p in persons], policy, [p.history for p in persons])


def run_mode(
    mode: str, persons: list[Person], population: Population, seed: int, folder: Path
) -> tuple[Result, float, str]:
    (folder / f"redis-{mode}").mkdir()
    server = RedisServer(folder / f"redis-{mode}")
    server.start()
    stand = Stand()
    port = free_port()
    env = {
        "REDIS_URL": server.url,
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),
        "DATA_DIR": str(folder / f"data-{mode}"),
        "CHATWOOT_BASE_URL": stand.url,
        "CHATWOOT_API_TOKEN": "cw-token",
        "CHATWOOT_WEBHOOK_SECRET": SECRET,
        "BOT_BACKEND": "echo",
        "BATCH_WINDOW_MODE": mode,
        "LOG_LEVEL": "WARNING",
    }
    client = redis.Redis.from_url(server.url, decode_responses=True)
    proc = boot_start_sh(env, folder / f"start-{mode}.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        t0 = time.time() + 5.0
        seed_history(client, persons, population, seed, t0)
        analytics._priors.clear()
        prior = analytics.prior_window(client, "default", 10.0)
        url = f"http://127.0.0.1:{port}/webhook/chatwoot/default"
        sent: dict[tuple[int, int, int], float] = {}
        lock = threading.Lock()

        def write(p: Person) -> None:
            session = requests.Session()
            for b, burst in enumerate(p.live):
                for i, f in enumerate(burst):
                    time.sleep(max(0.0, t0 + f.at - time.time()))
                    body = webhook(p, f)
                    at = time.time()
                    response = session.post(url, data=body, headers=signed_headers(body), timeout=10)
                    assert response.status_code == 202, response.text
                    with lock:
                        sent[(p.contact, b, i)] = at

        threads = [threading.Thread(target=write, args=(p,)) for p in persons]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(35.0)  # the last batches close (max wait 30 s) and are answered
        measured = measure(persons, sent, stand)
        report = subprocess.run(
            [sys.executable, "-m", "app", "analytics"],
            cwd=ROOT,
            env={**env, "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return measured, prior, report
    finally:
        stop(proc)
        stand.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=150)
    parser.add_argument("--modes", nargs="+", default=["sliding", "learned", "smart"])
    parser.add_argument("--occasional", type=float, default=0.05)
    parser.add_argument("--fast", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    population = Population(args.occasional, args.fast)
    persons = people(args.contacts, population, args.seed)
    bursts = [b for p in persons for b in p.live]
    new = sum(not p.history for p in persons)
    print(
        f"{population.name}, seed {args.seed}: {len(persons)} contacts ({new} without history),"
        f" {len(bursts)} live bursts, {sum(len(b) for b in bursts)} webhooks,"
        f" {sum(len(b) == 1 for b in bursts)} single-message bursts"
    )
    folder = Path(tempfile.mkdtemp(prefix="batching-live-"))
    for mode in args.modes:
        started = time.monotonic()
        live, prior, report = run_mode(mode, persons, population, args.seed, folder)
        sim = simulated(persons, mode, prior)
        print(f"\n{mode} (company prior {prior:g} s; {time.monotonic() - started:.0f} s)")
        print(f"  live       {row(live)}")
        print(f"  simulator  {row(sim)}")
        estimate = report[report.index("the smart window") :] if "the smart window" in report else report
        print("  python -m app analytics on the live company, after the run (fragments logged live):")
        print("\n".join("    " + line for line in estimate.splitlines()))


if __name__ == "__main__":
    main()
