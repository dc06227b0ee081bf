"""The smart window: how a fragment reads (in Portuguese, Spanish and English), the
window that follows from it and the contact's pace, the drainer using it on real
Redis, a real worker answering by it, and the analytics estimate an operator reads
before switching."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from app import analytics, keys
from app.analytics import Arrival, record_gaps, smart_estimate
from app.pace import MARGIN, SLACK, Pace
from app.payload import StoredMessage
from app.redis_client import redis_now
from app.settings import load_settings
from app.smart import PLAIN_SECONDS, Reading, read, smart_window
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
    assert smart_window(new, [100.0], OPENING, prior=16.0, low=3.0, high=30.0) == 16.0
    assert smart_window(new, [100.0], UNFINISHED, prior=40.0, low=3.0, high=30.0) == 30.0  # clamped


def test_the_pace_of_a_known_contact_shapes_the_window() -> None:
    singles = Pace().observe([0.0, DAY, 2 * DAY])  # two finished one-message bursts
    slow = Pace().observe([0.0, 12.0, DAY, DAY + 8.0, 2 * DAY])  # longest gaps 12 and 8
    now = [3 * DAY]
    # a one-message writer's opener alone is often all they send; their plain text closes soon
    assert smart_window(singles, now, OPENING, 16.0, 3.0, 30.0) == PLAIN_SECONDS
    assert smart_window(singles, now, PLAIN, 16.0, 3.0, 30.0) == 3.0
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
        ([(994.0, "bom dia")], 994.0 + 10.0),  # an opener: the prior (BATCH_WINDOW_SECONDS, nothing recorded)
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
    assert drainer._seconds_until_due()[1] == pytest.approx(expected - 995.0, abs=0.2)


def test_the_drainer_records_what_followed_each_reading(redis_url: str, rdb: redis.Redis) -> None:
    """In every mode (here the default, sliding), so the estimate is there before switching."""
    drainer = dry_run_drainer(redis_url, rdb, BATCH_WINDOW_SECONDS="1", BATCH_MAX_WAIT_SECONDS="5")
    queue(rdb, (960.0, "oi"), (964.0, "queria saber o preço"))
    assert drainer.run() == "released"
    assert rdb.hgetall(keys.reading_gaps("default")) == {"opening:4.0": "1"}
    assert rdb.hget(keys.last_reading("default"), "42") == "plain later"


def test_the_estimate_of_the_smart_rule_on_recorded_fragments(rdb: redis.Redis) -> None:
    # three messages sent alone (a question, a plain one, a greeting) and two bursts
    record_gaps(rdb, "default", "1", [Arrival(0.0, COMPLETE)])
    record_gaps(rdb, "default", "1", [Arrival(1000.0, PLAIN)])
    record_gaps(rdb, "default", "1", [Arrival(2000.0, OPENING)])
    record_gaps(
        rdb,
        "default",
        "1",
        [Arrival(3000.0, OPENING), Arrival(3012.0, UNFINISHED), Arrival(3014.0, COMPLETE)],
    )
    record_gaps(rdb, "default", "1", [Arrival(4000.0, COMPLETE), Arrival(4005.0, COMPLETE)])
    record_gaps(rdb, "default", "1", [Arrival(5000.0, PLAIN)])  # ends the second burst
    counts = rdb.hgetall(keys.reading_gaps("default"))
    assert counts == {
        "complete:alone": "1",
        "plain:alone": "1",
        "opening:alone": "1",
        "opening:12.0": "1",
        "unfinished:2.0": "1",
        "complete:end": "2",
        "complete:5.0": "1",
    }
    config = load_settings(
        {"REDIS_URL": "redis://x", "WEBHOOK_TOKEN": "t", "BATCH_WINDOW_SECONDS": "10"}
    ).companies["default"]
    estimate = smart_estimate(rdb, config)
    assert estimate.window == {"opening": 10.0, "unfinished": 10.0, "plain": PLAIN_SECONDS, "complete": 3.0}
    assert estimate.current == dict.fromkeys(estimate.window, 10.0)
    # pairs: 12 s after an opening (lost by both: 10 s), 2 s after "unfinished" (merged by both),
    # 5 s after a complete question (merged by 10 s, lost by the smart 3 s)
    assert estimate.merged(estimate.window) == pytest.approx(1 / 3)
    assert estimate.merged(estimate.current) == pytest.approx(2 / 3)
    assert estimate.waits(estimate.window, estimate.alone, 0.5) == PLAIN_SECONDS  # 3, 6, 10
    assert estimate.waits(estimate.current, estimate.alone, 0.5) == 10.0
    text = estimate.text()
    assert "same-burst pairs merged: smart 33.3%, current 66.7% (3 pairs)" in text
    assert "wait after a message sent alone: smart p50 6 s / p90 10 s, current p50 10 s / p90 10 s" in text


def test_the_analytics_command_reports_every_company(
    rdb: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    record_gaps(rdb, "acme", "1", [Arrival(0.0, COMPLETE)])
    record_gaps(rdb, "acme", "1", [Arrival(1000.0, OPENING), Arrival(1004.0, COMPLETE)])
    record_gaps(rdb, "acme", "1", [Arrival(3000.0, COMPLETE)])
    env = companies_env(
        redis_url, tmp_path, [{"company_id": "acme", "webhook_token": "a"}, {"company_id": "globex"}]
    )
    result = subprocess.run(
        [sys.executable, "-m", "app", "analytics"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "company acme: the smart window" in out and "company globex: the smart window" in out
    assert "same-burst pairs merged: smart 100.0%, current 100.0% (1 pairs)" in out
    assert "nothing recorded yet" in out  # globex


@pytest.mark.slow
def test_smart_mode_end_to_end_with_a_real_worker(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path: Path
) -> None:
    """One setting, three new contacts (BATCH_WINDOW_SECONDS 6 s is the prior while nothing
    is recorded): a complete question is answered after the shortest window; "bom dia"
    then, 4 s later, a question is one bot call (the greeting held the batch open; the
    burst's own pace closes it); "i want to book" without punctuation waits the plain
    window."""
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
    worker = Worker(env, "smart", beat=True).start(rdb)
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
        at = {
            int(c["path"].split("/conversations/")[1].split("/")[0]): c["at"] - sent
            for c in stand.calls("messages")
        }
        assert at[71] < 2.0  # the shortest window and a task hop, not the 6 s a sliding window waits
        assert stand.replies(72) == ["bom dia ¿Aceptan tarjeta?"]  # one call
        # held by the greeting past 4 s, then closed at the burst's own pace after the question
        assert 4.0 + MARGIN * 4.0 + SLACK - 0.3 <= at[72] < 4.0 + MARGIN * 4.0 + SLACK + 1.5
        assert PLAIN_SECONDS - 0.1 <= at[73] < PLAIN_SECONDS + 1.5
        counted = rdb.hgetall(keys.reading_gaps("default"))
        assert {k for k in counted if k.startswith("opening:")} <= {"opening:4.0", "opening:4.5"}  # 4 s
        assert sum(int(v) for k, v in counted.items() if k.startswith("opening:")) == 1
    finally:
        worker.stop()
