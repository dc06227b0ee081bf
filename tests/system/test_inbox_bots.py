"""Per-inbox bots (COMPANIES_FILE "inboxes"): an inbox with its own bot and window,
the company's other inboxes served as before. Through the real pipeline."""

from __future__ import annotations

import pytest
import redis

from app.settings import ConfigError, load_settings
from tests import chatwoot_payloads as cw
from tests.conftest import chatwoot_company, companies_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


def _clinic(stand: Stand, **inboxes: object) -> dict[str, object]:
    return chatwoot_company("clinic", stand, inboxes=inboxes)


def test_an_inbox_with_its_own_bot_and_window(
    redis_url: str, rdb: redis.Redis, stand: Stand, tmp_path
) -> None:
    stand.reset()
    sales = {"bot_backend": "python", "bot_handler": "tests.bot_handlers:shout", "batch_window_seconds": 0.5}
    env = companies_env(redis_url, tmp_path, [_clinic(stand, **{"9": sales})])
    worker = Worker(env, "inboxes").start(rdb)
    try:
        web = make_client(env)
        queued = post_webhook(
            web, cw.message("quero um orçamento", 401, inbox_id=9), company="clinic", secret="clinic-secret"
        )
        assert queued.status_code == 202 and queued.json["batching"]["window_seconds"] == 0.5
        assert (
            post_webhook(
                web, cw.message("bom dia", 402), company="clinic", secret="clinic-secret"
            ).status_code
            == 202
        )
        wait_for(lambda: len(stand.replies(401)) == 2 and stand.replies(402), timeout=15)  # two POSTs for 401
        assert stand.replies(401) == ["QUERO UM ORÇAMENTO", "(1 fragments)"]  # inbox 9: its python bot
        assert stand.replies(402) == ["bom dia"]  # inbox 4: the company's http bot
        assert [str(c["conversation_id"]) for c in stand.bot_calls] == ["402"]
    finally:
        worker.stop()


def test_an_inbox_may_set_only_its_bot_and_window(stand: Stand, tmp_path) -> None:
    import json

    path = tmp_path / "companies.json"
    for inboxes, why in (
        ({"9": {"chatwoot_api_token": "other"}}, "may set only"),
        ({"nine": {"bot_url": "http://x"}}, "is not an inbox id"),
        ({"9": {"bot_backend": "http"}}, "inboxes.9.bot_url is required"),
    ):
        company = _clinic(stand)
        company["inboxes"] = inboxes
        del company["bot_url"]  # so that an inbox switching to http must name its own
        company["bot_backend"] = "echo"
        path.write_text(json.dumps([company]))
        with pytest.raises(ConfigError, match=why):
            load_settings({"REDIS_URL": "redis://localhost", "COMPANIES_FILE": str(path)})
