"""BOT_CALLS_PER_DAY: past the day's budget, conversations go to humans with a message
instead of costing another bot call. Through the real pipeline."""

from __future__ import annotations

import time

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


def test_past_the_daily_budget_conversations_go_to_humans(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path
):
    stand.reset()
    env = base_env(
        redis_url,
        stand.url,
        TEST_LOG_DIR=str(tmp_path),
        BOT_CALLS_PER_DAY="2",
        BUDGET_MESSAGE="Nossa equipe vai te responder em breve.",
        BATCH_WINDOW_SECONDS="0.3",
        BATCH_MAX_WAIT_SECONDS="1",
    )
    worker = Worker(env, "budget").start(rdb)
    try:
        web = make_client(env)
        for conversation in (201, 202):
            assert post_webhook(web, cw.message(f"pergunta {conversation}", conversation)).status_code == 202
            wait_for(lambda c=conversation: stand.replies(c), timeout=10)
        assert post_webhook(web, cw.message("e a terceira?", 203)).status_code == 202
        wait_for(lambda: stand.calls("toggle_status"), timeout=10)
        assert len(stand.bot_calls) == 2  # the third conversation cost no bot call
        assert stand.replies(203) == ["Nossa equipe vai te responder em breve."]
        assert rdb.get(keys.handoff("default", 203)) == "bot"
        day = time.strftime("%Y-%m-%d", time.gmtime(rdb.time()[0]))
        assert (
            rdb.get(keys.bot_calls_day("default", day)) == "2"
            and rdb.ttl(keys.bot_calls_day("default", day)) > 0
        )
        metrics = web.get("/metrics").get_data(as_text=True)
        assert 'gateway_bot_calls_today{company="default"} 2.0' in metrics
        assert 'gateway_bot_calls_per_day{company="default"} 2.0' in metrics
        assert 'gateway_budget_handoffs_total{company="default"} 1.0' in metrics
    finally:
        worker.stop()
