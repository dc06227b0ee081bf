"""Batching on the live gateway: contacts chatting with the bot, turn by turn, in real time.

    .venv/bin/python bench/batching_live.py [--contacts 150] [--modes sliding learned smart]
                                            [--occasional 0.05] [--fast 0.5] [--seed 3]
                                            [--bot-seconds 2] [--cold] [--text heldout|lists]

For each mode: a fresh redis-server, the local Chatwoot stand-in with an HTTP bot that
takes ``--bot-seconds`` to answer (an LLM's pace), and start.sh booted as the
container runs it (HAProxy on $PORT, gunicorn, the default worker: a threads pool of
64 with its housekeeping), with the default window settings (window 10 s, max wait
30 s, min 3 s, max 30 s) but ``BATCH_WINDOW_MODE``.

The contacts are the simulator's (``bench/trace.py``: same population and seed), one
Chatwoot contact per conversation, writing the held-out corpus (``bench/heldout.py``)
by default. Each contact's last visit is played live **as a chat**: its first turn
begins within the run's first 20 s; every later turn is written ``think`` (1-10 s)
after the gateway's answer to the turn before reached Chatwoot, so the timeline is
the gateway's, as it is for real people. The earlier visits are the contact's
history: played through the mode in the simulator and stored as the drainer would
have stored it had the company run that mode all along
(``<company>:webhook_pace:<contact>``), and counted in the company's gap histogram,
from which the prior is learned; ``--cold`` stores none (a new deployment: the prior
is ``BATCH_WINDOW_SECONDS`` until 50 gaps are recorded). Every fragment is a
signed ``message_created`` webhook with the trace's text (an image with or without
its caption, a voice note), sent at its time.

Measured only from what reaches the local Chatwoot: a pair of consecutive fragments
of a turn is merged when no reply was posted between their arrivals; the bound is
what a rule knowing each turn's end would merge (a turn longer than the max wait
must split); a single message's wait is the time from its webhook to the bot call
that answers it (the batching window and the gateway's overhead; the bot's own
time is the same in every mode and left out), reported overall and on the first
and the fifth turn of a chat; bot calls are counted at the bot. The same contacts, history and think times are
then played in the simulator (``app.batching.simulate.converse``, the gateway's own functions,
with the prior the live company learned), and both are printed side by side.
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
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.batching import analytics  # noqa: E402
from app.batching.pace import PACE_TTL_SECONDS  # noqa: E402
from app.batching.simulate import Paced, Result, Visit, company_policy, converse, percentile  # noqa: E402
from app.store import keys  # noqa: E402
from bench import heldout  # noqa: E402
from bench.batching_quality import Bound  # noqa: E402
from bench.common import free_port, wait_http  # noqa: E402
from bench.trace import TEXT, Fragment, Population, bursts, trace  # noqa: E402
from tests import chatwoot_payloads as cw  # noqa: E402
from tests.conftest import SECRET, signed_headers  # noqa: E402
from tests.support import RedisServer, Stand, boot_start_sh  # noqa: E402

START_SPREAD = 20.0  # the first turns begin within this many seconds
HISTORY_CONTACTS = 4000  # the population's other contacts, whose gaps teach the company prior
ANSWER_TIMEOUT = 90.0  # a turn never answered by then is reported, and the chat goes on
MAX_WAIT = 30.0


@dataclass(frozen=True)
class Person:
    contact: int
    conversation: int
    history: list[Visit]  # earlier visits, on the trace's clock
    live: Visit  # the last visit, on the trace's clock
    begins: float  # when its first turn is written, seconds after the run's start


def people(count: int, population: Population, seed: int, text: dict) -> list[Person]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    return [
        Person(700_000 + index, 5000 + index, visits[:-1], visits[-1], rng.uniform(0, START_SPREAD))
        for index, visits in enumerate(trace(count, seed, population, text))
    ]


def record_gaps(client: redis.Redis, persons: list[Person], others: list[list[Visit]]) -> None:
    """The company's gap counts, from which the prior is learned: the earlier visits of the
    live contacts and the population's other contacts."""
    histories = [b for p in persons for b in bursts(p.history)] + [b for c in others for b in bursts(c)]
    for number, burst in enumerate(histories):
        analytics.record_gaps(client, "default", f"history-{number}", [f.at for f in burst])


def seed_paces(
    client: redis.Redis, persons: list[Person], mode: str, prior: float, t0: float, bot: float
) -> None:
    """Each contact's pace as the drainer would have stored it had the company run ``mode``
    all along: their earlier visits played turn by turn (``converse``, as the simulator
    plays them; a fragment that came after an answer sent too early was a turn to the
    mode, as live)."""
    for p in persons:
        policy = company_policy(mode, 10.0, 3.0, 30.0, MAX_WAIT, prior)
        if not isinstance(policy, Paced) or not p.history:
            continue
        converse([p.history], policy, bot)
        shift = t0 + p.begins - p.live.start  # the history keeps its distance to the live visit
        pace = replace(policy.pace, last_at=(policy.pace.last_at or 0.0) + shift)
        client.set(keys.pace("default", f"contact-{p.contact}"), pace.to_json(), ex=PACE_TTL_SECONDS)


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


class Replies:
    """The times of the replies reaching the local Chatwoot, per conversation; one thread
    reads the stand's record as it grows, and contacts wait here for an answer."""

    def __init__(self, stand: Stand) -> None:
        self.stand, self.seen = stand, 0
        self.times: dict[int, list[float]] = {}
        self.changed = threading.Condition()
        self.done = threading.Event()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        while not self.done.is_set():
            with self.stand.lock:
                new = self.stand.requests[self.seen :]
                self.seen += len(new)
            posted = [r for r in new if r["path"].endswith("/messages") and not r["json"].get("private")]
            if posted:
                with self.changed:
                    for r in posted:
                        conversation = int(r["path"].split("/conversations/")[1].split("/")[0])
                        self.times.setdefault(conversation, []).append(r["at"])
                    self.changed.notify_all()
            time.sleep(0.02)

    def first_after(self, conversation: int, after: float, timeout: float) -> float | None:
        """When the first reply posted after ``after`` reached Chatwoot (waits for it)."""
        deadline = time.time() + timeout
        with self.changed:
            while True:
                later = [t for t in self.times.get(conversation, []) if t > after]
                if later:
                    return min(later)
                if not self.changed.wait(max(0.0, deadline - time.time())) and time.time() >= deadline:
                    return None


@dataclass
class Played:
    """What a contact sent live: per turn, the webhooks' times."""

    sent: list[list[float]] = field(default_factory=list)
    unanswered: int = 0


def chat(p: Person, url: str, t0: float, replies: Replies) -> Played:
    """The contact's last visit, turn by turn: each turn ``think`` after the answer to the
    one before reached Chatwoot."""
    session, played, start = requests.Session(), Played(), t0 + p.begins
    for number, turn in enumerate(p.live.turns):
        if number:
            answered = replies.first_after(p.conversation, played.sent[-1][-1], ANSWER_TIMEOUT)
            if answered is None:
                played.unanswered += 1
                answered = time.time()
            start = answered + turn.think
        times = []
        for f in turn.fragments:
            time.sleep(max(0.0, start + f.at - time.time()))
            body = webhook(p, f)
            at = time.time()
            response = session.post(url, data=body, headers=signed_headers(body), timeout=10)
            assert response.status_code == 202, response.text
            times.append(at)
        played.sent.append(times)
    return played


def waited(sent: float, posted: list[float], called: list[float]) -> float:
    """How long the gateway held a message sent at ``sent`` before asking the bot: until
    the first bot call after it, unless its answer came first (the message joined a call
    already in flight: 0). The bot's own time, the same in every mode, is left out."""
    answer = next((r for r in posted if r > sent), None)
    call = next((c for c in called if c > sent), None)
    if answer is None:
        return float("nan")
    return 0.0 if call is None or call > answer else call - sent


def measure(persons: list[Person], played: dict[int, Played], replies: Replies, stand: Stand) -> Result:
    """From the replies the local Chatwoot received, the bot's calls (their times) and the
    webhooks' times."""
    result = Result()
    with stand.lock:
        spans = list(stand.bot_spans)
    for p in persons:
        posted = sorted(replies.times.get(p.conversation, []))
        called = sorted(started for conversation, started, _ in spans if conversation == str(p.conversation))
        for number, times in enumerate(played[p.contact].sent, 1):
            result.messages += len(times)
            for a, z in pairwise(times):
                result.pairs += 1
                result.merged += not any(a < r < z for r in posted)
            wait = waited(times[-1], posted, called)
            if len(times) == 1:
                result.single_waits.append(wait)
                result.single_waits_by_turn.setdefault(number, []).append(wait)
            else:
                result.end_waits.append(wait)
    result.batches = len(spans)
    return result


def bound(persons: list[Person]) -> Result:
    return converse([[p.live] for p in persons], Bound(MAX_WAIT), 0.0)


def simulated(persons: list[Person], mode: str, prior: float, bot_seconds: float, cold: bool) -> Result:
    """The same visits played in the simulator, after the same history, with the default
    settings."""
    policy = company_policy(mode, 10.0, 3.0, 30.0, MAX_WAIT, prior)
    history = None if cold else [p.history for p in persons]
    return converse([[p.live] for p in persons], policy, bot_seconds, history)


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def row(result: Result, most: Result) -> str:
    merged, calls, p50, p90, end = result.row()
    first = percentile(result.single_waits_by_turn.get(1, []), 0.9)
    fifth = percentile(result.single_waits_by_turn.get(5, []), 0.9)
    of_bound = result.merged / most.merged if most.merged else 1.0
    return (
        f"merged {merged:6.1%} ({result.merged}/{result.pairs}, {of_bound:6.1%} of the bound)"
        f"  calls/100 {calls:5.1f}  single p50 {p50:5.2f}s p90 {p90:5.2f}s"
        f" (turn 1 {first:5.2f}s, turn 5 {fifth:5.2f}s)  turn end p50 {end:5.2f}s"
    )


def run_mode(
    mode: str, persons: list[Person], others: list[list[Visit]], args: argparse.Namespace, folder: Path
) -> tuple[Result, float, int, str]:
    (folder / f"redis-{mode}").mkdir()
    server = RedisServer(folder / f"redis-{mode}")
    server.start()
    stand = Stand()
    stand.bot_delay = args.bot_seconds
    stand.bot_answer = lambda body: {"reply": body["text"] or "got your file"}  # media alone: no text
    port = free_port()
    env = {
        "REDIS_URL": server.url,
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),
        "DATA_DIR": str(folder / f"data-{mode}"),
        "CHATWOOT_BASE_URL": stand.url,
        "CHATWOOT_API_TOKEN": "cw-token",
        "CHATWOOT_WEBHOOK_SECRET": SECRET,
        "BOT_BACKEND": "http",
        "BOT_URL": f"{stand.url}/bot",
        "BATCH_WINDOW_MODE": mode,
        "LOG_LEVEL": "WARNING",
    }
    client = redis.Redis.from_url(server.url, decode_responses=True)
    proc = boot_start_sh(env, folder / f"start-{mode}.log")
    replies = Replies(stand)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        t0 = time.time() + 5.0
        if not args.cold:
            record_gaps(client, persons, others)
        analytics._priors.clear()
        prior = analytics.prior_window(client, "default", 10.0)
        if not args.cold:
            seed_paces(client, persons, mode, prior, t0, args.bot_seconds)
        url = f"http://127.0.0.1:{port}/webhook/chatwoot/default"
        played: dict[int, Played] = {}

        def contact(p: Person) -> None:
            played[p.contact] = chat(p, url, t0, replies)

        threads = [threading.Thread(target=contact, args=(p,)) for p in persons]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(MAX_WAIT + args.bot_seconds + 5)  # the last batches close and are answered
        measured = measure(persons, played, replies, stand)
        unanswered = sum(p.unanswered for p in played.values())
        report = subprocess.run(
            [sys.executable, "-m", "app", "analytics"],
            cwd=ROOT,
            env={**env, "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return measured, prior, unanswered, report
    finally:
        replies.done.set()
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
    parser.add_argument("--bot-seconds", type=float, default=2.0, help="the bot's time to answer")
    parser.add_argument("--cold", action="store_true", help="a new deployment: no history, no gaps")
    parser.add_argument("--text", choices=("heldout", "lists"), default="heldout")
    args = parser.parse_args()
    population = Population(args.occasional, args.fast)
    text = heldout.TEXT if args.text == "heldout" else TEXT
    persons = people(args.contacts, population, args.seed, text)
    others = trace(HISTORY_CONTACTS, args.seed + 1000, population, text)
    turns = [t for p in persons for t in p.live.turns]
    new = sum(not p.history for p in persons)
    print(
        f"{population.name}, seed {args.seed}, {args.text} text, bot {args.bot_seconds:g} s"
        f"{', cold start' if args.cold else ''}: {len(persons)} contacts"
        f" ({len(persons) if args.cold else new} without history), {len(turns)} turns"
        f" ({sum(len(t.fragments) == 1 for t in turns)} single-message,"
        f" {sum(len(p.live.turns) >= 5 for p in persons)} chats reach turn 5),"
        f" {sum(len(t.fragments) for t in turns)} webhooks"
    )
    most = bound(persons)
    print(f"bound (knows each turn's end): {most.merged}/{most.pairs} pairs can merge within the max wait")
    folder = Path(tempfile.mkdtemp(prefix="batching-live-"))
    for mode in args.modes:
        started = time.monotonic()
        live, prior, unanswered, report = run_mode(mode, persons, others, args, folder)
        sim = simulated(persons, mode, prior, args.bot_seconds, args.cold)
        print(
            f"\n{mode} (company prior {prior:g} s; {time.monotonic() - started:.0f} s;"
            f" turns unanswered within {ANSWER_TIMEOUT:g} s: {unanswered})"
        )
        print(f"  live       {row(live, most)}")
        print(f"  simulator  {row(sim, most)}")
        estimate = report[report.index("the smart window") :] if "the smart window" in report else report
        print("  python -m app analytics on the live company, after the run (fragments logged live):")
        print("\n".join("    " + line for line in estimate.splitlines()))


if __name__ == "__main__":
    main()
