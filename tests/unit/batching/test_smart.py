"""The smart window: how a fragment reads (in Portuguese, Spanish and English), the
window that follows from it and the contact's pace, the drainer using it on real
Redis, a real worker answering by it, and the analytics estimate an operator reads
before switching."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from app.batching import analytics
from app.batching.analytics import LoggedFragment, log_fragments
from app.batching.pace import MARGIN, SLACK, Pace
from app.batching.report import smart_estimate
from app.batching.simulate import Smart
from app.batching.smart import NEW_OPENING_SECONDS, PLAIN_SECONDS, Reading, read, smart_window
from app.chatwoot.messages import StoredMessage
from app.drain.due import look
from app.settings import load_settings
from app.store import keys
from app.store.client import redis_now
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, companies_env, dry_run_drainer, make_client, post_webhook
from tests.support import ROOT, Stand, Worker, wait_for

DAY = 86400.0
OPENING, UNFINISHED, PLAIN, COMPLETE = Reading


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # openings: greetings and "one question", with their punctuation and stretched letters
        ("oi", OPENING),
        ("Oiii", OPENING),
        ("bom dia!", OPENING),
        ("oi, tudo bem?", OPENING),
        ("Boa tarde, uma pergunta", OPENING),
        ("hola, ¿qué tal?", OPENING),
        ("Buenas tardes", OPENING),
        ("holaa", OPENING),
        ("hi there", OPENING),
        ("Hello, one question", OPENING),
        ("good morning :)", OPENING),
        # unfinished: a trailing mark, a connective, a verb waiting for its object
        ("então,", UNFINISHED),
        ("eu queria marcar para", UNFINISHED),
        ("queria saber", UNFINISHED),
        ("tipo...", UNFINISHED),
        ("sobre mi pedido,", UNFINISHED),
        ("y también", UNFINISHED),
        ("I was wondering if", UNFINISHED),
        ("my order and", UNFINISHED),
        ("wait —", UNFINISHED),
        # complete: final punctuation, a thank-you, emoji only, long writing
        ("Vocês abrem no domingo?", COMPLETE),
        ("Quero agendar para amanhã às 10h.", COMPLETE),
        ("¿Aceptan tarjeta?", COMPLETE),
        ("Do you take cards?", COMPLETE),
        ("obrigado", COMPLETE),
        ("ok gracias", COMPLETE),
        ("👍", COMPLETE),
        ("🙏🙏", COMPLETE),
        ("kkkkk", COMPLETE),
        ("jajaja", COMPLETE),
        ("haha 😂", COMPLETE),
        ("hi", OPENING),  # not laughter
        ("...", UNFINISHED),  # trails off: more is coming
        ("?", COMPLETE),
        ("a" * 30 + " " + "b" * 100, COMPLETE),
        # plain: no final punctuation, nothing that says more is coming
        ("qual o horário de vocês no sábado", PLAIN),
        ("cuánto sale el envío", PLAIN),
        ("do you deliver on sundays", PLAIN),
        ("me too", PLAIN),  # "too" is not "to"
    ],
)
def test_how_a_fragment_reads(text: str, expected: Reading) -> None:
    assert read(text) is expected


def test_attachments_read_by_their_caption_or_kind() -> None:
    assert read("", "audio") is COMPLETE  # a voice note says its piece whole
    assert read("", "image") is PLAIN  # an image alone: a caption or more may follow
    assert read("olha essa foto,", "image") is UNFINISHED
    assert read("Is this the right one?", "image") is COMPLETE


def test_a_new_contact_waits_by_what_the_fragment_says() -> None:
    new = Pace()
    assert smart_window(new, [100.0], COMPLETE, prior=16.0, low=3.0, high=30.0) == 3.0
    assert smart_window(new, [100.0], PLAIN, prior=16.0, low=3.0, high=30.0) == PLAIN_SECONDS
    assert smart_window(new, [100.0], OPENING, prior=16.0, low=3.0, high=30.0) == NEW_OPENING_SECONDS
    assert smart_window(new, [100.0], OPENING, prior=5.0, low=3.0, high=30.0) == 5.0
    assert smart_window(new, [100.0], UNFINISHED, prior=16.0, low=3.0, high=30.0) == 16.0
    assert smart_window(new, [100.0], UNFINISHED, prior=40.0, low=3.0, high=30.0) == 30.0  # clamped


def test_the_pace_of_a_known_contact_shapes_the_window() -> None:
    singles = Pace().observe([0.0, DAY, 2 * DAY])  # two finished one-message bursts
    slow = Pace().observe([0.0, 12.0, DAY, DAY + 8.0, 2 * DAY])  # longest gaps 12 and 8
    now = [3 * DAY]
    # a one-message writer's opener alone is often all they send; their plain text closes soon
    assert smart_window(singles, now, OPENING, 16.0, 3.0, 30.0) == PLAIN_SECONDS
    assert smart_window(singles, now, UNFINISHED, 16.0, 3.0, 30.0) == PLAIN_SECONDS
    assert smart_window(singles, now, PLAIN, 16.0, 3.0, 30.0) == 3.0
    # one fragmented burst (turn) in three is a contact who fragments: no longer a one-message
    # writer, their plain text waits what covers their gaps, an opener at least the prior
    once = Pace().observe([0.0, DAY, DAY + 12.0, 2 * DAY, 3 * DAY])
    assert smart_window(once, [4 * DAY], PLAIN, 16.0, 3.0, 30.0) == pytest.approx(MARGIN * 12.0 + SLACK)
    assert smart_window(once, [4 * DAY], OPENING, 16.0, 3.0, 30.0) == pytest.approx(MARGIN * 12.0 + SLACK)
    assert smart_window(once, [4 * DAY], COMPLETE, 16.0, 3.0, 30.0) == 3.0
    # a slow fragmenter: plain text waits their own window, an opener the longer of it and the prior
    own = MARGIN * 12.0 + SLACK
    assert smart_window(slow, now, PLAIN, 16.0, 3.0, 30.0) == pytest.approx(own)
    assert smart_window(slow, now, OPENING, 16.0, 3.0, 30.0) == pytest.approx(max(16.0, own))
    assert smart_window(slow, now, COMPLETE, 16.0, 3.0, 30.0) == 3.0  # a complete first fragment closes


def test_inside_a_burst_its_pace_keeps_even_a_complete_fragment_open() -> None:
    burst = [1000.0, 1009.0]  # a 9 s gap so far
    assert smart_window(Pace(), burst, COMPLETE, 16.0, 3.0, 30.0) == pytest.approx(MARGIN * 9.0 + SLACK)
    assert smart_window(Pace(), burst, PLAIN, 16.0, 3.0, 30.0) == pytest.approx(MARGIN * 9.0 + SLACK)


def test_smart_is_a_window_mode_and_schedules_at_the_shortest_window() -> None:
    env = {"REDIS_URL": "redis://x", "WEBHOOK_TOKEN": "t", "BATCH_WINDOW_MODE": "Smart"}
    company = load_settings(env).companies["default"]
    assert company.batch_window_mode == "smart" and company.paced and company.first_window == 3.0


def queue(rdb: redis.Redis, *fragments: tuple[float, str], contact: int = 7) -> None:
    """Queue fragments (arrival on a clock that reads 995 now, text) for conversation 42."""
    base = redis_now(rdb) - 995.0
    for i, (at, text) in enumerate(fragments):
        message = StoredMessage(i + 1, "42", 1, text, received_at=base + at, contact={"id": contact})
        rdb.rpush(keys.queue("default", "42"), message.to_json())


@pytest.mark.parametrize(
    ("fragments", "expected"),
    [
        ([(994.0, "What time do you open on Saturday?")], 994.0 + 3.0),  # complete: the shortest
        ([(994.0, "do you deliver on sundays")], 994.0 + PLAIN_SECONDS),
        ([(994.0, "bom dia")], 994.0 + NEW_OPENING_SECONDS),  # a new contact's greeting
        ([(994.0, "eu queria saber")], 994.0 + 10.0),  # unfinished: the prior (BATCH_WINDOW_SECONDS)
        ([(985.0, "hola"), (994.0, "¿Aceptan tarjeta?")], 994.0 + MARGIN * 9.0 + SLACK),  # the burst's pace
    ],
)
def test_the_drainer_reads_the_latest_fragment(
    redis_url: str, rdb: redis.Redis, fragments: list[tuple[float, str]], expected: float
) -> None:
    analytics._priors.clear()
    drainer = dry_run_drainer(
        redis_url, rdb, BATCH_WINDOW_MODE="smart", BATCH_WINDOW_SECONDS="10", BATCH_MAX_WAIT_SECONDS="60"
    )
    queue(rdb, *fragments)
    assert look(drainer.context()).wait == pytest.approx(expected - 995.0, abs=0.2)


def test_the_max_wait_caps_a_batch_that_the_text_holds_open(redis_url: str, rdb: redis.Redis) -> None:
    """Invariant 5 in smart mode: "oi" at 970 and "and" at 994 would hold the batch for the
    prior after 994, but it closes BATCH_MAX_WAIT_SECONDS (30 s) after its first fragment."""
    analytics._priors.clear()
    drainer = dry_run_drainer(
        redis_url, rdb, BATCH_WINDOW_MODE="smart", BATCH_WINDOW_SECONDS="16", BATCH_MAX_WAIT_SECONDS="30"
    )
    queue(rdb, (970.0, "oi"), (994.0, "my order and"))
    assert look(drainer.context()).wait == pytest.approx(970.0 + 30.0 - 995.0, abs=0.2)


def test_the_drainer_logs_each_fragment_with_its_reading_in_every_mode(
    redis_url: str, rdb: redis.Redis
) -> None:
    """Here the default mode, sliding: the estimate is there before anyone switches."""
    drainer = dry_run_drainer(redis_url, rdb, BATCH_WINDOW_SECONDS="1", BATCH_MAX_WAIT_SECONDS="5")
    queue(rdb, (960.0, "oi"), (964.0, "queria saber o preço"))
    assert drainer.run() == "released"
    logged = [LoggedFragment.parse(e) for e in rdb.lrange(keys.fragment_log("default"), 0, -1)]
    assert [(f.subject, f.reading) for f in logged if f] == [("contact-7", "opening"), ("contact-7", "plain")]
    assert logged[1].at - logged[0].at == pytest.approx(4.0, abs=0.01)
    assert "oi" not in " ".join(rdb.lrange(keys.fragment_log("default"), 0, -1))  # never the text


def test_fragment_log_length_zero_logs_nothing(redis_url: str, rdb: redis.Redis) -> None:
    drainer = dry_run_drainer(redis_url, rdb, BATCH_WINDOW_SECONDS="1", FRAGMENT_LOG_LENGTH="0")
    queue(rdb, (960.0, "oi"))
    assert drainer.run() == "released"
    assert not rdb.exists(keys.fragment_log("default"))
    assert rdb.hlen(keys.gap_histogram("default")) == 0 and rdb.hexists(keys.last_fragment("default"), "42")


def test_the_fragment_log_is_capped(rdb: redis.Redis) -> None:
    for at in range(8):
        pipe = rdb.pipeline()
        log_fragments(pipe, "default", [LoggedFragment("contact-1", float(at), "plain")], length=5)
        pipe.execute()
    kept = [LoggedFragment.parse(e) for e in rdb.lrange(keys.fragment_log("default"), 0, -1)]
    assert [f.at for f in kept if f] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert LoggedFragment.parse("contact-1 12.5 shouting") is None and LoggedFragment.parse("junk") is None


def log(rdb: redis.Redis, company: str, *entries: tuple[int, float, Reading]) -> None:
    pipe = rdb.pipeline()
    logged = [LoggedFragment(f"contact-{c}", at, r.value) for c, at, r in entries]
    log_fragments(pipe, company, logged, length=100)
    pipe.execute()


def test_the_estimate_replays_the_logged_fragments_through_both_policies(rdb: redis.Redis) -> None:
    log(
        rdb,
        "default",
        (1, 0.0, COMPLETE),  # alone: sliding waits 10 s, smart 3 s
        (2, 100.0, OPENING),  # held by both (smart: a new contact's greeting, 7.5 s)
        (3, 200.0, COMPLETE),  # smart closes after 3 s: the plain fragment 5 s later is a new batch
        (2, 107.0, COMPLETE),  # smart: inside a burst with a 7 s gap, 1.5 x 7 + 0.5 = 11 s
        (3, 205.0, PLAIN),  # smart: max(6 s, the burst's 1.5 x 5 + 0.5) = 8 s
        (4, 300.0, OPENING),  # alone: sliding waits 10 s, smart 7.5 s
    )
    config = load_settings(
        {"REDIS_URL": "redis://x", "WEBHOOK_TOKEN": "t", "BATCH_WINDOW_SECONDS": "10"}
    ).companies["default"]
    estimate = smart_estimate(rdb, config)
    assert (estimate.fragments, estimate.contacts, estimate.prior) == (6, 4, 10.0)
    assert estimate.current.row() == pytest.approx((1.0, 4 / 6 * 100, 10.0, 10.0, 10.0))
    assert estimate.smart.row() == pytest.approx((0.5, 5 / 6 * 100, 5.25, 3.0, 9.5))
    text = estimate.text()
    assert "current mode (sliding) on the latest 6 fragments (4 contacts" in text
    assert "(2 same-burst pairs, 2 single messages; a pair the current mode split" in text


def test_the_analytics_command_reports_every_company(
    rdb: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    log(rdb, "acme", (1, 0.0, COMPLETE), (2, 1000.0, OPENING), (2, 1004.0, COMPLETE), (3, 3000.0, COMPLETE))
    env = companies_env(
        redis_url, tmp_path, [{"company_id": "acme", "webhook_token": "a"}, {"company_id": "globex"}]
    )
    command = [sys.executable, "-m", "app", "analytics"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "company acme: the smart window" in out and "company globex: the smart window" in out
    assert "(1 same-burst pairs, 2 single messages;" in out
    assert "nothing recorded yet" in out  # globex


@pytest.mark.slow
def test_smart_mode_end_to_end_with_a_real_worker(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path: Path
) -> None:
    """One setting, three new contacts (BATCH_WINDOW_SECONDS 6 s is the prior while nothing
    is recorded): a complete question is answered after the shortest window; "bom dia"
    then, 4 s later, a question is one bot call (the greeting held the batch open, 6 s;
    the burst's own pace closes it); "i want to book" without punctuation waits the
    plain window."""
    stand.reset()
    env = base_env(
        redis_url,
        stand.url,
        BATCH_WINDOW_MODE="smart",
        BATCH_WINDOW_MIN_SECONDS="0.5",
        BATCH_WINDOW_SECONDS="6",
        BATCH_MAX_WAIT_SECONDS="20",
        TEST_LOG_DIR=str(tmp_path),
    )
    analytics._priors.clear()
    worker = Worker(env, "smart", housekeeping=True).start(rdb)
    try:
        web = make_client(env)
        sent = time.time()
        for conv, text in ((71, "Vocês abrem no sábado?"), (72, "bom dia"), (73, "i want to book")):
            body = cw.message(text, conv, sender={**cw.CONTACT, "id": 600 + conv})
            assert post_webhook(web, body).status_code == 202
        time.sleep(4.0)
        body = cw.message("¿Aceptan tarjeta?", 72, sender={**cw.CONTACT, "id": 672})
        assert post_webhook(web, body).status_code == 202
        wait_for(lambda: stand.replies(71) and stand.replies(72) and stand.replies(73), timeout=25)
        at = {conversation: times[0] - sent for conversation, times in stand.message_times().items()}
        assert at[71] < 2.0  # the shortest window and a task hop, not the 6 s a sliding window waits
        assert stand.replies(72) == ["bom dia ¿Aceptan tarjeta?"]  # one call
        # held by the greeting past 4 s, then closed at the burst's own pace after the question
        assert 4.0 + MARGIN * 4.0 + SLACK - 0.3 <= at[72] < 4.0 + MARGIN * 4.0 + SLACK + 1.5
        assert PLAIN_SECONDS - 0.1 <= at[73] < PLAIN_SECONDS + 1.5
        logged = [LoggedFragment.parse(e) for e in rdb.lrange(keys.fragment_log("default"), 0, -1)]
        assert sorted(f.reading for f in logged if f) == ["complete", "complete", "opening", "plain"]
    finally:
        worker.stop()


@dataclass(frozen=True)
class _Fragment:
    at: float
    reading: str


@pytest.mark.parametrize(
    "fragments",
    [
        [(990.0, "oi"), (994.0, "queria saber")],
        [(980.0, "Hello, one question"), (989.0, "Do you open on Sundays?")],
        [(994.0, "👍")],
        [(970.0, "my order"), (975.0, "never came"), (993.0, "and")],
    ],
)
@pytest.mark.parametrize("history", [(), (0.0, 300.0, 600.0), (0.0, 14.0, 300.0, 309.0, 600.0)])
def test_the_simulator_closes_a_batch_when_the_drainer_does(
    redis_url: str, rdb: redis.Redis, fragments: list[tuple[float, str]], history: tuple[float, ...]
) -> None:
    """bench/batching_quality.py replays app.batching.simulate.Smart; the drainer schedules by the same
    functions: for the same pace and fragments they agree on the due time."""
    analytics._priors.clear()
    drainer = dry_run_drainer(
        redis_url, rdb, BATCH_WINDOW_MODE="smart", BATCH_WINDOW_SECONDS="10", BATCH_MAX_WAIT_SECONDS="30"
    )
    base = redis_now(rdb) - 995.0
    pace = Pace().observe(base - 2 * DAY + t for t in history) if history else Pace()
    rdb.set(keys.pace("default", "contact-7"), pace.to_json())
    queue(rdb, *fragments)
    policy = Smart(prior=10.0, max_wait=30.0, low=3.0, high=30.0)
    policy.pace = pace
    queued = [_Fragment(base + at, read(text).value) for at, text in fragments]
    expected = max(0.0, policy.close(queued) - (base + 995.0))
    assert look(drainer.context()).wait == pytest.approx(expected, abs=0.2)
