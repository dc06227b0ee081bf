"""Replies with choices and media: a bot's reply part may carry choices (posted as
Chatwoot's ``input_select``, which WhatsApp shows as buttons up to three and as a list
beyond) or media by URL (fetched through the media guard, with a size cap and a type
check, and uploaded with the message as Chatwoot's API takes attachments: multipart,
``attachments[]``). What cannot be fetched goes as a link. The reply ledger keeps the
parts whole, so a run resuming the batch after a SIGKILL posts the same parts once.
Through the real pipeline, with a bot that answers differently on every call."""

from __future__ import annotations

import itertools
import threading

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import fault_env, make_client, post_webhook
from tests.support import Stand, Worker, free_port, wait_for

pytestmark = pytest.mark.slow
PICTURE = b"\xff\xd8\xff\xe0" + b"JFIF-menu" * 500


def _creates(stand: Stand, conversation: int) -> list[dict]:
    return [r["json"] for r in stand.calls("messages") if f"/conversations/{conversation}/" in r["path"]]


@pytest.fixture
def rich_stand(stand: Stand) -> Stand:
    stand.reset()
    stand.media["menu.jpg"] = PICTURE
    stand.media["error.html"] = b"<html>login</html>"
    calls = itertools.count(1)

    def bot(body: dict) -> dict:  # an LLM: never the same words twice
        n = next(calls)
        return {
            "replies": [
                {"content": f"Escolha um horário ({n}):", "choices": ["09:00", "10:30", "14:00", "16:00"]},
                {"content": f"Nosso cardápio ({n})", "media": [f"{stand.url}/media/menu.jpg"]},
            ]
        }

    stand.bot_answer = bot
    return stand


def test_choices_go_as_input_select_and_media_as_an_upload_and_what_cannot_be_fetched_as_a_link(
    redis_url: str, rdb: redis.Redis, rich_stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand = rich_stand
    closed = f"http://127.0.0.1:{free_port()}/photo.png"  # a private address, not Chatwoot's: refused
    stand.bot_answer = lambda body: {
        "replies": [
            {"content": "Sim ou não?", "choices": [{"title": "Sim", "value": "yes"}, "Não"]},
            {"content": "Cardápio", "media": [f"{stand.url}/media/menu.jpg"]},
            {"content": "Fotos", "media": [closed, f"{stand.url}/media/error.html"]},
        ]
    }
    env = fault_env(redis_url, stand, tmp_path)
    workers.append(Worker(env, "rich").start(rdb))
    web = make_client(env)
    assert post_webhook(web, cw.message("quero ver o cardápio", 801)).status_code == 202
    wait_for(lambda: len(_creates(stand, 801)) == 4, timeout=15)
    choices, upload, link, second_link = _creates(stand, 801)
    assert choices == {
        "content": "Sim ou não?",
        "message_type": "outgoing",
        "private": False,
        "content_type": "input_select",
        "content_attributes": {"items": [{"title": "Sim", "value": "yes"}, {"title": "Não", "value": "Não"}]},
    }
    assert upload["content"] == "Cardápio" and upload["private"] == "false"
    (picture,) = upload["attachments"]
    assert picture["field"] == "attachments[]" and picture["filename"] == "menu.jpg"
    assert picture["type"] == "image/jpeg" and picture["data"] == PICTURE
    # Neither the private address nor an HTML page is uploaded: both go as links, one
    # message per file (Chatwoot sends WhatsApp a message's first attachment only).
    assert link["content"] == f"Fotos\n{closed}" and not link.get("attachments")
    assert second_link["content"] == f"{stand.url}/media/error.html" and not second_link.get("attachments")
    assert rdb.hget(keys.stats("default"), "reply_media_failed") == "2"


def test_a_bot_answer_with_a_bad_choice_is_a_bot_failure_naming_it(
    redis_url: str, rdb: redis.Redis, rich_stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand = rich_stand
    stand.bot_answer = lambda body: {"reply": {"content": "Escolha", "choices": ["x" * 30]}}
    env = fault_env(
        redis_url, stand, tmp_path, BOT_FALLBACK_MESSAGE="Um atendente já vem.", BOT_MAX_RETRIES="0"
    )
    workers.append(Worker(env, "bad-choice").start(rdb))
    web = make_client(env)
    assert post_webhook(web, cw.message("oi", 802)).status_code == 202
    wait_for(lambda: stand.replies(802), timeout=15)
    assert stand.replies(802) == ["Um atendente já vem."]
    (dead,) = rdb.lrange(keys.dead_letters("default"), 0, -1)
    assert "over 24 characters" in dead


def test_a_run_resuming_after_a_sigkill_posts_the_stored_rich_parts_once(
    redis_url: str, rdb: redis.Redis, rich_stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand = rich_stand
    stand.can_read = True  # a user token: the part created before the kill is read back
    env = fault_env(redis_url, stand, tmp_path)
    victim = Worker(env, "victim", housekeeping=True).start(rdb)
    workers.append(victim)
    fired = threading.Event()

    def crash() -> None:
        if not fired.is_set():
            fired.set()
            victim.kill()  # the first part is created; the worker never hears back

    stand.on_message_created = crash
    web = make_client(env)
    assert post_webhook(web, cw.message("tem horário amanhã?", 803)).status_code == 202
    wait_for(fired.is_set, timeout=15)
    stand.on_message_created = None
    workers.append(Worker(env, "heir", housekeeping=True).start(rdb))
    wait_for(lambda: len(_creates(stand, 803)) >= 2, timeout=30)
    wait_for(lambda: rdb.llen(keys.processing("default", "803")) == 0, timeout=15)
    created = _creates(stand, 803)
    assert len(created) == 2  # each part once: the first read back, not posted again
    assert created[0]["content"] == "Escolha um horário (1):" and created[0]["content_type"] == "input_select"
    assert created[1]["content"] == "Nosso cardápio (1)" and created[1]["attachments"][0]["data"] == PICTURE
    assert len([c for c in stand.bot_calls if str(c["conversation_id"]) == "803"]) == 1  # the stored answer
