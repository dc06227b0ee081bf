"""BOT_HOURS against BUSINESS_HOURS, through the real pipeline: three companies of one
worker whose hours are set around the present moment (by Redis's clock)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from app.settings.hours import DAYS, parse_business_hours
from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import chatwoot_company, companies_env, idle, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    now = datetime.fromtimestamp(redis.Redis.from_url(redis_url).time()[0], UTC)
    elsewhere = DAYS[(now.weekday() + 3) % 7]  # a day that is not today: closed now
    companies = [
        chatwoot_company(
            "night",
            stand,
            business_hours=f"{elsewhere} 09:00-10:00",
            bot_hours="inside",
            away_message="We are closed now; we answer from 9:00.",
        ),
        chatwoot_company(
            "day",
            stand,
            business_hours="mon-sun 00:00-24:00",
            bot_hours="outside",
            away_message="never sent: humans are in",
        ),
        chatwoot_company(
            "open",
            stand,
            business_hours="mon-sun 00:00-24:00",
            bot_hours="inside",
            business_hours_tz="Asia/Tokyo",
        ),
    ]
    return companies_env(redis_url, tmp_path_factory.mktemp("hours"), companies)


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    w = Worker(env, "hours").start(redis.Redis.from_url(redis_url))
    yield w
    w.stop()


def test_outside_its_hours_the_bot_is_silent_and_says_it_is_away_once(worker, env, rdb, stand: Stand) -> None:
    stand.reset()
    web = make_client(env)
    assert (
        post_webhook(web, cw.message("hello?", 301), company="night", secret="night-secret").status_code
        == 202
    )
    wait_for(lambda: idle(rdb, 301, "night"), timeout=10)
    assert (
        post_webhook(web, cw.message("anyone?", 301), company="night", secret="night-secret").status_code
        == 202
    )
    wait_for(lambda: idle(rdb, 301, "night"), timeout=10)
    time.sleep(0.3)
    assert stand.bot_calls == []
    assert stand.replies(301) == ["We are closed now; we answer from 9:00."]  # once, not per message
    assert 0 < rdb.ttl(keys.away("night", 301)) <= 7 * 24 * 3600


def test_inside_business_hours_an_outside_bot_leaves_it_to_humans(worker, env, rdb, stand: Stand) -> None:
    stand.reset()
    web = make_client(env)
    assert post_webhook(web, cw.message("hi", 302), company="day", secret="day-secret").status_code == 202
    wait_for(lambda: idle(rdb, 302, "day"), timeout=10)
    time.sleep(0.3)
    assert stand.bot_calls == [] and stand.replies(302) == []


def test_inside_its_hours_the_bot_answers(worker, env, rdb, stand: Stand) -> None:
    stand.reset()
    web = make_client(env)
    assert (
        post_webhook(web, cw.message("hi there", 303), company="open", secret="open-secret").status_code
        == 202
    )
    wait_for(lambda: stand.replies(303), timeout=10)
    assert stand.replies(303) == ["hi there"]


def test_business_hours_parse_ranges_wrapping_weeks_and_midnight() -> None:
    hours = parse_business_hours("fri-mon 22:00-24:00; wed 09:30-12:00")
    monday_late = datetime(2026, 11, 30, 23, 0)  # a Monday
    assert hours.is_open(monday_late) and not hours.is_open(datetime(2026, 12, 1, 23, 0))  # Tuesday
    assert hours.is_open(datetime(2026, 12, 2, 9, 30)) and not hours.is_open(datetime(2026, 12, 2, 12, 0))
    assert hours.next_change(datetime(2026, 12, 2, 11, 0)) == datetime(2026, 12, 2, 12, 0)
    for bad in ("mon 18:00-09:00", "funday 09:00-10:00", "mon 25:00-26:00", "always"):
        with pytest.raises(ValueError):
            parse_business_hours(bad)
