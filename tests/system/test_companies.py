"""Several companies from COMPANIES_FILE, each with its own secret, bot and Chatwoot."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import companies_env, post_webhook
from tests.support import ROOT, Stand, Worker, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("companies")
    companies = [
        {
            "company_id": "clinic",
            "chatwoot_base_url": stand.url,
            "chatwoot_api_token": "cw-token",
            "chatwoot_webhook_secret": "clinic-secret",
            "bot_backend": "http",
            "bot_url": f"{stand.url}/bot",
            "bot_fallback_message": "Sorry, one moment please.",
            "batch_window_seconds": 0.5,
            "batch_max_wait_seconds": 2,
        },
        {
            "company_id": "shop",
            "webhook_token": "shop-token",
            "bot_backend": "python",
            "bot_handler": "tests.bot_handlers:shout",
            "batch_window_seconds": 0.5,
            "batch_max_wait_seconds": 2,
        },
    ]
    return companies_env(redis_url, folder, companies, OUTBOUND_RETRIES="1")


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    w = Worker(env, "companies", housekeeping=True).start(redis.Redis.from_url(redis_url))
    yield w
    w.stop()


def test_each_company_uses_its_own_secret_bot_and_replier(web, rdb, stand: Stand) -> None:
    assert (
        post_webhook(web, cw.message("hi clinic", 90), company="clinic", secret="clinic-secret").status_code
        == 202
    )
    # The clinic's signature does not open the shop, which uses a token.
    assert post_webhook(web, cw.message("x", 91), company="shop", secret="clinic-secret").status_code == 401
    body = json.dumps(cw.message("hi shop", 91)).encode()
    shop = web.post(
        "/webhook/chatwoot/shop?token=shop-token", data=body, headers={"Content-Type": "application/json"}
    )
    assert shop.status_code == 202
    wait_for(lambda: stand.replies(90) and rdb.llen(keys.outbox("shop")) == 2, timeout=15)
    assert stand.replies(90) == ["hi clinic"]
    kept = [json.loads(e)["content"] for e in rdb.lrange(keys.outbox("shop"), 0, -1)]
    assert kept == ["HI SHOP", "(1 fragments)"]  # python bot, dry-run outbox, two parts in order
    assert rdb.keys("clinic:webhook_queue:*") == [] and stand.replies(91) == []


def test_bot_failure_past_retries_is_dead_lettered_and_conversation_continues(web, rdb, stand: Stand) -> None:
    stand.bot_answer = lambda body: (
        (500, {"error": "model down"}) if "fail" in body["text"] else {"reply": "ok"}
    )
    post_webhook(web, cw.message("please fail", 92), company="clinic", secret="clinic-secret")
    wait_for(lambda: rdb.llen(keys.dead_letters("clinic")) == 1, timeout=15)
    letter = json.loads(rdb.lindex(keys.dead_letters("clinic"), 0))
    assert letter["stage"] == "bot" and "500" in letter["error"] and len(letter["messages"]) == 1
    assert len(stand.bot_calls) == 2  # one call + OUTBOUND_RETRIES=1
    assert stand.replies(92) == ["Sorry, one moment please."]  # BOT_FALLBACK_MESSAGE
    post_webhook(web, cw.message("now work", 92), company="clinic", secret="clinic-secret")
    wait_for(lambda: stand.replies(92) == ["Sorry, one moment please.", "ok"], timeout=15)


def test_a_handler_that_cannot_be_imported_stops_start_up(env) -> None:
    import subprocess
    import sys

    bad = {**env, "COMPANIES_FILE": "", "BOT_BACKEND": "python", "BOT_HANDLER": "nowhere.module:fn"}
    result = subprocess.run(
        [sys.executable, "-m", "app", "check-config"], cwd=ROOT, env=bad, capture_output=True, text=True
    )
    assert result.returncode == 2 and "BOT_HANDLER 'nowhere.module:fn' cannot be imported" in result.stderr
