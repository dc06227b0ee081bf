"""The learned window: the pace a contact shows, the window it yields, and the
drainer using it (with the fixed and sliding modes beside it) on real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from app.batching import analytics
from app.batching.pace import HISTORY, MARGIN, SLACK, Pace, learned_window
from app.chatwoot.messages import StoredMessage
from app.drain import Drainer
from app.drain.due import look
from app.settings import ConfigError, load_settings
from app.store import keys
from app.store.client import redis_now
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, dry_run_drainer, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

DAY = 86400.0


def bursts(*gaps_per_burst: tuple[float, ...]) -> list[float]:
    """Arrival times of bursts a day apart, each with the given gaps."""
    times = []
    for day, gaps in enumerate(gaps_per_burst):
        at = day * DAY
        times.append(at)
        for gap in gaps:
            at += gap
            times.append(at)
    return times


def test_pace_keeps_the_longest_gap_of_each_finished_burst() -> None:
    pace = Pace().observe(bursts((), (2.0, 1.0), (12.0,), ()))
    assert pace.bursts == (0.0, 2.0, 12.0)  # the last burst is still in progress
    assert pace.current == 0.0 and pace.last_at == 3 * DAY


def test_pace_folds_batch_by_batch_like_all_at_once() -> None:
    times = bursts((3.0, 4.0), (), (8.0, 1.0, 20.0))
    whole = Pace().observe(times)
    pace = Pace()
    for batch in ([times[0]], times[1:3], times[3:5], times[5:]):
        pace = pace.observe(batch)
    assert pace == whole and pace.current == 20.0


def test_a_gap_across_a_turn_ends_the_burst_and_is_never_counted() -> None:
    """Invariant 12: the contact answers the bot 0.5 s after its reply, 3.5 s after their last
    message: that is a turn, not a 3.5 s fragment gap. The burst ends, nothing is learned
    from that gap; fragments after the turn start a burst of their own."""
    pace = Pace().observe([100.0, 102.0])  # a burst with a 2 s gap
    answered = pace.observe([105.5], turn_at=105.0)  # the reply went out at 105
    assert answered.bursts == (2.0,) and answered.current == 0.0 and answered.last_at == 105.5
    assert answered.observe([107.0], turn_at=105.0).current == 1.5  # after the turn: fragment gaps again
    window = learned_window(Pace().observe([100.0]), [103.5], prior=10.0, low=3.0, high=30.0, turn_at=103.0)
    assert window == 10.0  # the prior of a new contact, not 1.5 x 3.5 s + 0.5


def test_gaps_across_a_turn_are_not_counted_into_the_companys_prior(rdb: redis.Redis) -> None:
    pipe = rdb.pipeline(transaction=False)
    analytics.count_gaps(pipe, "default", "7", 100.0, [102.0, 110.0, 111.0], turn_at=105.0)
    pipe.execute()
    counted = {float(b): int(c) for b, c in rdb.hgetall(keys.gap_histogram("default")).items()}
    assert counted == {2.0: 1, 1.0: 1}  # 100->102 and 110->111; 102->110 spans the answer at 105


def test_pace_ignores_what_it_already_counted_and_forgets_old_bursts() -> None:
    pace = Pace().observe(bursts(*[(float(i),) for i in range(1, HISTORY + 4)]))
    assert len(pace.bursts) == HISTORY and pace.bursts[-1] == HISTORY + 2
    assert pace.observe([pace.last_at - 5.0]) == pace  # an older arrival changes nothing


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "not json",
        "[]",
        '{"b": [1], "c": 0}',
        '{"b": ["x"], "c": 0, "t": 1}',
        '{"b": [-1], "c": 0, "t": 1}',
    ],
)
def test_unreadable_pace_counts_as_a_new_contact(raw: str | None) -> None:
    assert Pace.from_json(raw) == Pace()


def test_pace_round_trips_through_json() -> None:
    pace = Pace().observe(bursts((1.5,), (), (9.25, 3.0), (0.5,)))
    assert Pace.from_json(pace.to_json()) == pace


def test_new_contact_gets_the_prior_clamped() -> None:
    assert learned_window(Pace(), [100.0], prior=16.0, low=3.0, high=30.0) == 16.0
    assert learned_window(Pace(), [100.0], prior=60.0, low=3.0, high=30.0) == 30.0
    one = Pace().observe(bursts(()))  # one finished burst is not yet a history
    assert learned_window(one, [DAY], prior=16.0, low=3.0, high=30.0) == 16.0


def test_one_message_writer_gets_the_shortest_window() -> None:
    pace = Pace().observe(bursts((), (), ()))
    assert learned_window(pace, [3 * DAY], prior=16.0, low=3.0, high=30.0) == 3.0


def test_fast_and_slow_typists_get_their_own_windows() -> None:
    fast = Pace().observe(bursts((2.0, 3.0), (1.0,), (), (2.5,), ()))
    slow = Pace().observe(bursts((15.0, 9.0), (12.0,), (), (16.0,), ()))
    # the 80 % quantile of the bursts' longest gaps: 2.5 s of (3, 1, 0, 2.5, 0); 15 s of (15, 12, 0, 16, 0)
    assert learned_window(fast, [5 * DAY], 16.0, 3.0, 30.0) == pytest.approx(MARGIN * 2.5 + SLACK)
    assert learned_window(slow, [5 * DAY], 16.0, 3.0, 30.0) == pytest.approx(MARGIN * 15.0 + SLACK)


def test_the_burst_in_progress_widens_the_window_at_once() -> None:
    singles = Pace().observe(bursts((), (), ()))
    start = 3 * DAY
    assert learned_window(singles, [start, start + 2.5], 16.0, 3.0, 30.0) == pytest.approx(
        MARGIN * 2.5 + SLACK
    )
    assert learned_window(singles, [start, start + 40.0], 16.0, 3.0, 30.0) == 30.0  # clamped


def test_window_mode_settings_are_validated() -> None:
    env = {"REDIS_URL": "redis://x", "WEBHOOK_TOKEN": "t"}
    company = load_settings({**env, "BATCH_WINDOW_MODE": "Learned"}).companies["default"]
    assert company.batch_window_mode == "learned" and company.first_window == 3.0
    assert load_settings(env).companies["default"].first_window == 10.0
    with pytest.raises(ConfigError, match="BATCH_WINDOW_MODE must be one of fixed, sliding, learned"):
        load_settings({**env, "BATCH_WINDOW_MODE": "adaptive"})
    with pytest.raises(ConfigError, match=r"BATCH_WINDOW_MAX_SECONDS \(5.0\) must not be below"):
        load_settings({**env, "BATCH_WINDOW_MIN_SECONDS": "8", "BATCH_WINDOW_MAX_SECONDS": "5"})
    with pytest.raises(ConfigError, match="BATCH_WINDOW_MIN_SECONDS must be a positive number"):
        load_settings({**env, "BATCH_WINDOW_MIN_SECONDS": "0"})


def test_prior_is_the_company_window_for_95_percent_once_enough_gaps_are_known(rdb: redis.Redis) -> None:
    analytics._priors.clear()
    assert analytics.prior_window(rdb, "default", 10.0) == 10.0  # nothing recorded yet
    analytics._priors.clear()
    analytics.record_gaps(rdb, "default", "1", [float(i * 2) for i in range(40)])  # 39 gaps of 2 s
    analytics.record_gaps(rdb, "default", "2", [1000.0 + i * 12 for i in range(30)])  # 29 gaps of 12 s
    assert analytics.prior_window(rdb, "default", 10.0) == 12.0
    rdb.delete(keys.gap_histogram("default"))
    assert analytics.prior_window(rdb, "default", 10.0) == 12.0  # cached for a minute
    analytics._priors.clear()


def drainer_for(redis_url: str, rdb: redis.Redis, **env: str) -> Drainer:
    return dry_run_drainer(redis_url, rdb, **env)


def queue(rdb: redis.Redis, *arrivals: float, contact: int = 7) -> None:
    """Queue messages that arrived at these times of a clock that reads 995 now (by Redis's
    clock, the one the drainer reads)."""
    base = redis_now(rdb) - 995.0
    for i, at in enumerate(arrivals):
        message = StoredMessage(i + 1, "42", 1, f"m{i}", received_at=base + at, contact={"id": contact})
        rdb.rpush(keys.queue("default", "42"), message.to_json())


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("fixed", 5.0), ("sliding", 9.0), ("learned", 994.0 + 16.0 * MARGIN + SLACK - 995.0)],
)
def test_each_mode_decides_when_the_batch_is_due(
    redis_url: str, rdb: redis.Redis, mode: str, expected: float
) -> None:
    """Fragments at 990 and 994, now 995: fixed closes 10 s after the first (1000),
    sliding 10 s after the latest (1004), learned the contact's own window after
    the latest (the burst's 4 s gap so far is below it)."""
    analytics._priors.clear()
    drainer = drainer_for(
        redis_url, rdb, BATCH_WINDOW_MODE=mode, BATCH_WINDOW_SECONDS="10", BATCH_MAX_WAIT_SECONDS="60"
    )
    # a slow typist: finished bursts with longest gaps 16 s and 4 s, then (990, 994) 0 s so far
    slow = Pace().observe([0.0, 16.0, 300.0, 304.0, 600.0])
    rdb.set(keys.pace("default", "contact-7"), slow.to_json())
    queue(rdb, 990.0, 994.0)
    assert look(drainer.context()).wait == pytest.approx(max(0.0, expected), abs=0.2)


def test_learned_mode_keeps_a_one_message_writer_waiting_only_the_shortest_window(
    redis_url: str, rdb: redis.Redis
) -> None:
    analytics._priors.clear()
    drainer = drainer_for(redis_url, rdb, BATCH_WINDOW_MODE="learned")
    rdb.set(keys.pace("default", "contact-7"), Pace().observe([0.0, 300.0, 600.0]).to_json())
    queue(rdb, 994.0)
    assert look(drainer.context()).wait == pytest.approx(2.0, abs=0.2)  # 994 + 3 (the shortest) - 995


def test_learned_mode_records_the_contacts_pace_when_it_claims(redis_url: str, rdb: redis.Redis) -> None:
    analytics._priors.clear()
    drainer = drainer_for(redis_url, rdb, BATCH_WINDOW_MODE="learned", BATCH_WINDOW_MIN_SECONDS="1")
    now = redis_now(rdb)
    queue(rdb, 995.0 - 20.0, 995.0 - 14.0, contact=9)  # a 6 s gap; the 5 s max wait has passed
    assert drainer.run() == "released"
    stored = Pace.from_json(rdb.get(keys.pace("default", "contact-9")))
    assert stored.current == pytest.approx(6.0) and stored.last_at == pytest.approx(now - 14.0, abs=0.5)
    assert rdb.ttl(keys.pace("default", "contact-9")) > 80 * 86400
    assert [e for e in rdb.lrange(keys.outbox("default"), 0, -1) if "m0 m1" in e]  # one merged reply


def test_sliding_mode_stores_no_pace(redis_url: str, rdb: redis.Redis) -> None:
    drainer = drainer_for(redis_url, rdb, BATCH_WINDOW_SECONDS="1")
    queue(rdb, 995.0 - 20.0, contact=9)
    assert drainer.run() == "released"
    assert not rdb.keys(keys.pace("default", "*"))


@pytest.mark.slow
def test_learned_mode_end_to_end_with_a_real_worker(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path: Path
) -> None:
    """Three contacts, one setting: a one-message writer is answered after the shortest
    window, a slow typist's two fragments 2 s apart become one bot call, and a new
    contact waits the company prior (BATCH_WINDOW_SECONDS while nothing is recorded)."""
    stand.reset()
    env = base_env(
        redis_url,
        stand.url,
        BATCH_WINDOW_MODE="learned",
        BATCH_WINDOW_MIN_SECONDS="0.4",
        BATCH_WINDOW_MAX_SECONDS="6",
        BATCH_WINDOW_SECONDS="3",
        BATCH_MAX_WAIT_SECONDS="10",
        TEST_LOG_DIR=str(tmp_path),
    )
    now = time.time()
    singles = Pace().observe([now - 3 * DAY, now - 2 * DAY, now - DAY])
    slow = Pace().observe([now - 3 * DAY, now - 3 * DAY + 2.0, now - 2 * DAY, now - 2 * DAY + 1.5, now - DAY])
    rdb.set(keys.pace("default", "contact-501"), singles.to_json())
    rdb.set(keys.pace("default", "contact-502"), slow.to_json())
    worker = Worker(env, "learned", housekeeping=True).start(rdb)
    try:
        web = make_client(env)
        sent = time.time()
        for conv, contact in ((61, 501), (62, 502), (63, 503)):
            body = cw.message("hello", conv, sender={**cw.CONTACT, "id": contact})
            assert post_webhook(web, body).status_code == 202
        time.sleep(2.0)
        body = cw.message("I want to book", 62, sender={**cw.CONTACT, "id": 502})
        assert post_webhook(web, body).status_code == 202
        wait_for(lambda: stand.replies(61) and stand.replies(62) and stand.replies(63), timeout=15)
        at = {conversation: times[0] - sent for conversation, times in stand.message_times().items()}
        assert at[61] < 1.8  # shortest window (0.4 s) plus a task hop, not the 3 s prior
        assert 3.0 <= at[63] < 4.5  # new contact: the prior
        assert stand.replies(62) == ["hello I want to book"]  # one call: the learned 3.5 s window held
        assert at[62] >= 2.0 + MARGIN * 2.0 + SLACK - 0.1
        learned = Pace.from_json(rdb.get(keys.pace("default", "contact-502")))
        assert learned.current == pytest.approx(2.0, abs=0.3)  # the new burst's gap, recorded
    finally:
        worker.stop()
