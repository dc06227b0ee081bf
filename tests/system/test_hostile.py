"""Hostile and oversized input through the real worker, and what reaches the logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import redis

from tests import chatwoot_payloads as cw
from tests.conftest import base_env, make_client, post_webhook, signed_headers
from tests.support import RedisServer, Stand, Worker, wait_for

pytestmark = pytest.mark.slow
REDIS_PASSWORD = "redis-pass-7f3a9c"
API_TOKEN = "cw-api-token-51d2e8"
WEBHOOK_SECRET = "whsec-a81f03c7"
BODY_MARKER = "BODY-MARKER-d4c1"


@pytest.fixture
def secured(stand: Stand, tmp_path) -> Iterator[tuple[dict[str, str], redis.Redis]]:  # type: ignore[no-untyped-def]
    stand.reset()
    stand.api_token = API_TOKEN
    server = RedisServer(tmp_path, password=REDIS_PASSWORD)
    server.start()
    env = base_env(
        server.url,
        stand.url,
        CHATWOOT_API_TOKEN=API_TOKEN,
        CHATWOOT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        TEST_LOG_DIR=str(tmp_path),
        BATCH_WINDOW_SECONDS="0.3",
        BATCH_MAX_WAIT_SECONDS="1",
    )
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield env, client
    finally:
        stand.api_token = "cw-token"
        server.stop()


def test_secrets_and_message_bodies_never_reach_the_logs_at_info(secured, stand: Stand, caplog) -> None:
    env, client = secured
    worker = Worker(env, "audit", housekeeping=True).start(client)
    caplog.set_level(logging.INFO)
    try:
        web = make_client(env)
        for i in range(3):
            ok = post_webhook(web, cw.message(f"{BODY_MARKER} {i}", 140), secret=WEBHOOK_SECRET)
            assert ok.status_code == 202
        refused = post_webhook(web, cw.message(f"{BODY_MARKER} refused", 140), secret="guess")
        assert refused.status_code == 401
        stand.bot_answer = lambda body: (
            (500, {"error": "down"}) if "fail" in body["text"] else {"reply": body["text"]}
        )
        post_webhook(web, cw.message(f"{BODY_MARKER} fail", 141), secret=WEBHOOK_SECRET)
        wait_for(lambda: stand.replies(140) and client.llen("default:webhook_dead") == 1, timeout=20)
    finally:
        worker.stop()
    logs = worker.log() + caplog.text
    assert "drain done" in logs and "message queued" in logs  # the logs were captured
    for secret in (REDIS_PASSWORD, API_TOKEN, WEBHOOK_SECRET, BODY_MARKER):
        assert secret not in logs, f"{secret!r} leaked into the logs"
    for answer in (refused.get_data(as_text=True),):
        assert WEBHOOK_SECRET not in answer and BODY_MARKER not in answer


def test_a_100_kb_message_is_answered_and_a_2_mib_body_refused(secured, stand: Stand) -> None:
    env, client = secured
    worker = Worker(env, "big", housekeeping=True).start(client)
    try:
        web = make_client(env)
        text = ("All work and no play makes Jack a dull boy. " * 2400)[:100_000]
        assert post_webhook(web, cw.message(text, 142), secret=WEBHOOK_SECRET).status_code == 202
        wait_for(lambda: len(stand.replies(142)) == 25, timeout=20)
        parts = stand.replies(142)  # cut at sentence ends under WhatsApp's 4,096 characters
        assert all(len(p) <= 4096 for p in parts) and " ".join(parts) == text.strip()
        body = json.dumps(cw.message("x" * 2_100_000, 143)).encode()
        too_big = web.post(
            "/webhook/chatwoot/default", data=body, headers=signed_headers(body, secret=WEBHOOK_SECRET)
        )
        assert too_big.status_code == 413 and "1048576" in too_big.get_json()["reason"]
        assert post_webhook(web, cw.message("still fine", 142), secret=WEBHOOK_SECRET).status_code == 202
        wait_for(lambda: "still fine" in stand.replies(142), timeout=20)
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        worker.stop()
