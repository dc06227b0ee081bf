"""WhatsApp's 24-hour customer-service window: for a WhatsApp conversation whose contact
last wrote more than 24 h ago (Redis's clock, kept per conversation by ENQUEUE), the
gateway posts no free text — SERVICE_WINDOW_TEMPLATE instead (Chatwoot's
template_params), or, without one, a private note and a handoff. Checked just before each
post: here the clock is moved through Redis while the bot thinks, as a batch delayed by a
backlog would find it. Other channels are not held to it. Through the real pipeline."""

from __future__ import annotations

import json

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import fault_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow
TEMPLATE = {"name": "retomar_contato", "language": "pt_BR", "params": ["{name}", "{text}"]}


def _window_passes_while_the_bot_thinks(stand: Stand, rdb: redis.Redis, conversation: int) -> None:
    def bot(body: dict) -> dict:
        if str(body["conversation_id"]) == str(conversation) and "depois" in body["text"]:
            seconds, _ = rdb.time()
            rdb.set(keys.contact_wrote("default", conversation), f"{seconds - 25 * 3600:.3f}")  # 25 h ago
        return {"reply": f"resposta: {body['text']}"}

    stand.bot_answer = bot


def _creates(stand: Stand, conversation: int) -> list[dict]:
    return [r["json"] for r in stand.calls("messages") if f"/conversations/{conversation}/" in r["path"]]


def test_past_the_window_the_template_goes_instead_of_free_text(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    _window_passes_while_the_bot_thinks(stand, rdb, 1101)
    env = fault_env(redis_url, stand, tmp_path, SERVICE_WINDOW_TEMPLATE=json.dumps(TEMPLATE))
    workers.append(Worker(env, "window").start(rdb))
    web = make_client(env)
    assert post_webhook(web, cw.message("oi", 1101)).status_code == 202
    wait_for(lambda: stand.replies(1101) == ["resposta: oi"], timeout=15)  # inside the window
    assert rdb.exists(keys.contact_wrote("default", 1101))
    assert post_webhook(web, cw.message("e depois?", 1101)).status_code == 202
    wait_for(lambda: len(_creates(stand, 1101)) == 2, timeout=15)
    template = _creates(stand, 1101)[1]
    assert template["template_params"] == {
        "name": "retomar_contato",
        "category": "UTILITY",
        "language": "pt_BR",
        "processed_params": {"1": "Maria Souza", "2": "resposta: e depois?"},
    }
    assert template["content"] == "[retomar_contato] Maria Souza | resposta: e depois?"
    assert rdb.hget(keys.stats("default"), "service_window_closed") == "1"
    assert not stand.calls("toggle_status")  # the template reached them: no handoff


def test_past_the_window_without_a_template_the_humans_get_a_note_and_the_conversation(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    _window_passes_while_the_bot_thinks(stand, rdb, 1102)
    env = fault_env(redis_url, stand, tmp_path)
    workers.append(Worker(env, "window-none").start(rdb))
    web = make_client(env)
    assert post_webhook(web, cw.message("e depois?", 1102)).status_code == 202
    wait_for(lambda: stand.calls("toggle_status"), timeout=15)
    assert stand.replies(1102) == []  # no free text
    (note,) = stand.notes(1102)
    assert "customer-service window is closed" in note and "resposta: e depois?" in note
    assert rdb.get(keys.handoff("default", 1102)) == "bot"

    # Another channel (the API channel) is not held to WhatsApp's window.
    assert post_webhook(web, cw.message("e depois?", 1103, channel="Channel::Api")).status_code == 202
    wait_for(lambda: stand.replies(1103), timeout=15)
    assert stand.replies(1103) == ["resposta: e depois?"]
    assert not rdb.exists(keys.contact_wrote("default", 1103))
