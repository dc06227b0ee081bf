"""A contact who chats: each question answered, the next written half a second later.
Through the real pipeline (a real worker, real Redis, the local Chatwoot), in real time.
The gap between two of the contact's messages across the bot's answer is a turn, never a
fragment gap (invariant 12): the window must not grow turn after turn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from app.batching.analytics import TURN, LoggedFragment, bursts_of
from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import chatwoot_company, companies_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow
QUESTIONS = (
    "Vocês abrem no sábado?",
    "Qual o valor da consulta?",
    "Aceitam cartão de crédito?",
    "Tem estacionamento no local?",
    "Do you open on Sundays?",
)
LOW = 3.0  # BATCH_WINDOW_MIN_SECONDS, the default


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    companies = [  # the default settings, but the learned company's window (its prior) is 6 s
        chatwoot_company(
            "smart", stand, batch_window_mode="smart", batch_window_seconds=10, batch_max_wait_seconds=30
        ),
        chatwoot_company(
            "learned", stand, batch_window_mode="learned", batch_window_seconds=6, batch_max_wait_seconds=30
        ),
    ]
    return companies_env(redis_url, tmp_path_factory.mktemp("turns"), companies)


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    w = Worker(env, "turns", pool="threads", concurrency=4, prefetch=4, housekeeping=True)
    yield w.start(redis.Redis.from_url(redis_url))
    w.stop()


def chat(env: dict[str, str], stand: Stand, company: str, conversation: int) -> list[float]:
    """Five turns; each one's wait from the question's webhook to its answer at Chatwoot."""
    web = make_client(env)
    waits = []
    for number, question in enumerate(QUESTIONS, 1):
        sent = time.time()
        answer = post_webhook(
            web, cw.message(question, conversation), company=company, secret=f"{company}-secret"
        )
        assert answer.status_code == 202, answer.json
        wait_for(lambda n=number: len(stand.replies(conversation)) >= n, timeout=40)
        waits.append(stand.message_times()[conversation][number - 1] - sent)
        time.sleep(0.5)  # the contact reads the answer and asks the next thing
    return waits


def test_a_contact_who_chats_gets_no_longer_window_turn_after_turn(env, worker, rdb, stand: Stand) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    waits: dict[str, list[float]] = {}
    threads = [
        threading.Thread(target=lambda c=company, n=number: waits.update({c: chat(env, stand, c, n)}))
        for company, number in (("smart", 900), ("learned", 901))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # smart: every turn of a complete question within the shortest window
    assert all(w <= LOW + 0.5 for w in waits["smart"]), waits["smart"]
    # learned: the prior (6 s) while the contact is new, then what the contact's own fragment
    # gaps justify: they never fragmented, so the shortest window; never growing
    learned = waits["learned"]
    assert all(w <= 6 + 0.5 for w in learned), learned
    assert all(w <= LOW + 0.5 for w in learned[2:]), learned
    # the fragment log keeps the turns, so the analytics' replay sees five one-message
    # bursts, not one burst of five (which would teach a 4-pair, ~4 s-gap burst)
    for company in ("smart", "learned"):
        logged = [LoggedFragment.parse(e) for e in rdb.lrange(keys.fragment_log(company), 0, -1)]
        fragments = [f for f in logged if f]
        assert [f.reading for f in fragments].count(TURN) == 4, fragments
        assert [len(b) for b in bursts_of(fragments)] == [1] * 5
