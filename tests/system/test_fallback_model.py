"""OPENAI_FALLBACK_*: when the first model times out or answers 429/5xx, a second one is
asked within the same BOT_TIMEOUT_SECONDS, with its own key; which model answered is
logged and counted. Through the real pipeline (signed webhooks, real Redis, a real
worker, the local Chatwoot and OpenAI-compatible stand-ins)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
import redis

from app.bots.openai import endpoints
from app.settings import CompanyConfig
from tests import chatwoot_payloads as cw
from tests.conftest import fault_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


def test_a_model_that_fails_is_replaced_by_the_fallback_within_the_same_deadline(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path
) -> None:
    stand.reset()
    stand.failing_models["big-model"] = 503
    other_host = f"http://localhost:{urlparse(stand.url).port}/v1"  # the same stand, another origin
    env = fault_env(
        redis_url,
        stand,
        tmp_path,
        BOT_BACKEND="openai",
        OPENAI_BASE_URL=f"{stand.url}/v1",
        OPENAI_MODEL="big-model",
        OPENAI_API_KEY="sk-first",
        OPENAI_FALLBACK_BASE_URL=other_host,
        OPENAI_FALLBACK_MODEL="small-model",
        OPENAI_FALLBACK_API_KEY="sk-second",
        BOT_TIMEOUT_SECONDS="6",
    )
    worker = Worker(env, "fallback").start(rdb)
    try:
        web = make_client(env)
        assert post_webhook(web, cw.message("posso remarcar?", 501)).status_code == 202
        wait_for(lambda: stand.replies(501), timeout=15)
        assert stand.replies(501) == ["you said: posso remarcar?"]
        asked = [(c["json"]["model"], c["authorization"]) for c in stand.completions]
        # the first once (no retries left to it: the fallback has the rest of the deadline)
        assert asked == [("big-model", "Bearer sk-first"), ("small-model", "Bearer sk-second")]
        metrics = web.get("/metrics").get_data(as_text=True)
        assert 'gateway_bot_answers_total{company="default",model="small-model"} 1.0' in metrics
        assert "model=small-model" in worker.log_path.read_text()

        stand.failing_models["big-model"] = 400  # the request's own fault: no second model
        assert post_webhook(web, cw.message("e agora?", 502)).status_code == 202
        wait_for(lambda: len(stand.completions) == 3, timeout=15)
        wait_for(lambda: "stage=bot" in worker.log_path.read_text(), timeout=15)  # a dead letter
        assert [c["json"]["model"] for c in stand.completions][2:] == ["big-model"]
    finally:
        worker.stop()


def test_a_key_never_goes_to_another_host() -> None:
    """Without OPENAI_FALLBACK_API_KEY the first key goes only to the same origin."""
    first = {"openai_base_url": "https://api.one.example/v1", "openai_model": "m", "openai_api_key": "sk-1"}
    elsewhere = CompanyConfig(**first, openai_fallback_base_url="https://api.two.example/v1")
    assert endpoints(elsewhere)[1].api_key is None and endpoints(elsewhere)[1].model == "m"
    same = CompanyConfig(
        **first, openai_fallback_base_url="https://api.one.example/v1", openai_fallback_model="s"
    )
    assert endpoints(same)[1] == ("https://api.one.example/v1", "s", "sk-1")
    assert len(endpoints(CompanyConfig(**first))) == 1
