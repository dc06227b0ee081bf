"""What operators of competing tools expect, through the real pipeline (a real worker,
the local Chatwoot and bot): pause by label, ignore lists."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, idle, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return base_env(
        redis_url,
        stand.url,
        TEST_LOG_DIR=str(tmp_path_factory.mktemp("logs")),
        PAUSE_LABELS="bot-off,humano",
        IGNORE_CONTACTS="+1555*,vip@example.com",
        IGNORE_GROUPS="*",
        HANDOFF_KEYWORDS="atendente,human",
        HANDOFF_MESSAGE="Um atendente vai falar com você.",
        HANDOFF_TEAM_ID="3",
        BATCH_WINDOW_SECONDS="3",
        BATCH_MAX_WAIT_SECONDS="6",
        TRANSCRIBE_BACKEND="openai",
        TRANSCRIBE_BASE_URL=f"{stand.url}/v1",
        TRANSCRIBE_API_KEY="sk-transcribe",
        TRANSCRIBE_MAX_BYTES="1000",
        TRANSCRIBE_TIMEOUT_SECONDS="3",  # a missing file is asked again until then
    )


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    w = Worker(env, "operator", housekeeping=True).start(redis.Redis.from_url(redis_url))
    yield w
    w.stop()


def _labelled(body: dict[str, Any], *labels: str) -> dict[str, Any]:
    body["conversation"]["labels"] = list(labels)
    return body


def _labels_changed(conversation: int, *labels: str) -> dict[str, Any]:
    """conversation_updated after an agent added or removed a label (EventDataPresenter's labels)."""
    body = cw.conversation_updated(conversation)
    body["labels"] = list(labels)
    body["changed_attributes"] = [{"label_list": {"previous_value": [], "current_value": list(labels)}}]
    return body


def test_a_pause_label_silences_the_bot_until_it_is_removed(web, stand: Stand, rdb: redis.Redis) -> None:
    answer = post_webhook(web, _labelled(cw.message("anyone there?", 91), "VIP", "Bot-Off"))
    assert answer.status_code == 200 and "'bot-off'" in answer.json["reason"]
    assert rdb.get(keys.paused("default", 91)) == "bot-off"
    # the label comes off: the next message is the bot's again
    assert post_webhook(web, _labelled(cw.message("hello again", 91), "vip")).status_code == 202
    wait_for(lambda: stand.replies(91), timeout=10)
    assert stand.replies(91) == ["hello again"] and not rdb.exists(keys.paused("default", 91))


def test_a_label_added_while_fragments_wait_leaves_them_to_humans(
    web, stand: Stand, rdb: redis.Redis
) -> None:
    assert post_webhook(web, cw.message("I want to book", 92)).status_code == 202  # window: 1 s
    assert post_webhook(web, _labels_changed(92, "humano")).status_code == 200  # an agent labels it
    wait_for(lambda: idle(rdb, 92), timeout=10)
    time.sleep(0.5)
    assert stand.bot_calls == [] and stand.replies(92) == []
    assert post_webhook(web, _labels_changed(92)).status_code == 200  # the label removed
    assert not rdb.exists(keys.paused("default", 92))
    assert post_webhook(web, _labelled(cw.message("still there?", 92))).status_code == 202
    wait_for(lambda: stand.replies(92), timeout=10)
    assert stand.replies(92) == ["still there?"]


def test_ignored_contacts_and_groups_never_reach_the_bot(web, stand: Stand, rdb: redis.Redis) -> None:
    by_phone = cw.message("spam", 93, sender={**cw.CONTACT, "phone_number": "+15550001111"})
    by_email = cw.message("hi", 94, sender={**cw.CONTACT, "email": "VIP@example.com"})
    group = cw.message("hi all", 95, sender={**cw.CONTACT, "identifier": "120363040000000000@g.us"})
    group_conversation = cw.message("hi all", 96)
    group_conversation["conversation"]["group_source_id"] = "120363040000000001@g.us"
    for body, why in (
        (by_phone, "IGNORE_CONTACTS '+1555*'"),
        (by_email, "IGNORE_CONTACTS 'vip@example.com'"),
        (group, "IGNORE_GROUPS '*'"),
        (group_conversation, "IGNORE_GROUPS '*'"),
    ):
        answer = post_webhook(web, body)
        assert answer.status_code == 200 and why in answer.json["reason"], answer.json
    assert post_webhook(web, cw.message("a real customer", 97)).status_code == 202
    wait_for(lambda: stand.replies(97), timeout=10)
    assert [str(call["conversation_id"]) for call in stand.bot_calls] == ["97"]
    assert not any(rdb.exists(keys.queue("default", c)) for c in (93, 94, 95, 96))


def test_a_handoff_keyword_hands_off_at_once_without_a_bot_call(web, stand: Stand, rdb: redis.Redis) -> None:
    """ "atendente" alone: no bot call, no 3 s window; the fragment before it goes with it;
    HANDOFF_MESSAGE is the reply, the team is assigned, the conversation opened."""
    started = time.monotonic()
    assert post_webhook(web, cw.message("oi, preciso de ajuda", 98)).status_code == 202
    assert post_webhook(web, cw.message("  Atendente ", 98)).status_code == 202
    wait_for(lambda: stand.calls("toggle_status"), timeout=10)
    assert time.monotonic() - started < 2.5  # the window (3 s) was not waited
    assert stand.bot_calls == []
    assert stand.replies(98) == ["Um atendente vai falar com você."]
    assert [c["json"] for c in stand.calls("assignments")] == [{"team_id": 3}]
    assert stand.calls("toggle_status")[0]["json"] == {"status": "open"}
    assert rdb.get(keys.handoff("default", 98)) == "bot"
    wait_for(lambda: idle(rdb, 98), timeout=10)
    # humans have it: Chatwoot shows it open now (toggle_status), and a "pending" repeated would not
    # give it back either (the gateway recorded its own change to open)
    assert post_webhook(web, cw.message("hello?", 98, status="open")).json["status"] == "ignored"


def test_the_bot_routes_a_handoff_to_its_team_with_a_note(web, stand: Stand, rdb: redis.Redis) -> None:
    stand.bot_answer = lambda body: {
        "reply": "Vou te passar para o financeiro.",
        "handoff": True,
        "team": 7,
        "note": "Cliente quer segunda via do boleto de março.",
    }
    assert post_webhook(web, cw.message("quero a segunda via do boleto", 99)).status_code == 202
    wait_for(lambda: stand.calls("toggle_status"), timeout=15)
    assert len(stand.bot_calls) == 1
    assert stand.replies(99) == ["Vou te passar para o financeiro."]
    assert stand.notes(99) == ["Cliente quer segunda via do boleto de março."]
    assert [c["json"] for c in stand.calls("assignments")] == [{"team_id": 7}]  # the bot's team wins


def _voice_note(stand: Stand, conversation: int, name: str, said: bytes | None) -> dict[str, Any]:
    """A voice note without Chatwoot's transcript; its audio (the words, here) in storage."""
    if said is not None:
        stand.media[name] = said
    body = cw.audio(None, conversation)
    body["attachments"][0]["data_url"] = f"{stand.url}/rails/active_storage/blobs/{name}"
    return body


def test_a_voice_note_is_transcribed_and_joins_its_burst_in_order(
    web, stand: Stand, rdb: redis.Redis
) -> None:
    """ "I want to book" + a voice note + "for Tuesday": one bot call, the transcript in its place."""
    for body in (
        cw.message("I want to book", 110),
        _voice_note(stand, 110, "voice-110.ogg", b"tomorrow at nine"),
        cw.message("for Tuesday", 110),
    ):
        assert post_webhook(web, body).status_code == 202
    wait_for(lambda: stand.replies(110), timeout=15)
    (call,) = stand.bot_calls
    assert call["text"] == "I want to book [voice note: tomorrow at nine] for Tuesday"
    assert call["messages"][1]["attachments"][0]["transcribed_text"] == "tomorrow at nine"
    assert stand.transcriptions == [
        {"model": "whisper-1", "authorization": "Bearer sk-transcribe", "bytes": 16}
    ]


def test_a_voice_note_whose_upload_is_not_finished_is_fetched_once_it_is(web, stand: Stand, rdb) -> None:
    """Chatwoot sends message_created before its storage has the upload: the media answers
    404 for a moment. It is asked again, with backoff, within TRANSCRIBE_TIMEOUT_SECONDS."""
    assert post_webhook(web, _voice_note(stand, 114, "voice-114.ogg", None)).status_code == 202
    uploaded = threading.Timer(3.5, lambda: stand.media.update({"voice-114.ogg": b"see you at noon"}))
    uploaded.start()  # the window is 3 s: the first fetch finds nothing
    wait_for(lambda: stand.replies(114), timeout=15)
    uploaded.join()
    (call,) = stand.bot_calls
    assert call["messages"][0]["attachments"][0]["transcribed_text"] == "see you at noon"
    assert rdb.hget(keys.stats("default"), "transcriptions_failed") is None


def test_a_voice_note_that_cannot_be_transcribed_still_reaches_the_bot(web, stand: Stand, rdb) -> None:
    """A failing transcription server, an audio over TRANSCRIBE_MAX_BYTES, a missing file:
    each voice note reaches the bot as audio without text; none is dropped."""
    stand.transcribe_status = 500
    assert post_webhook(web, _voice_note(stand, 111, "voice-111.ogg", b"call me")).status_code == 202
    assert post_webhook(web, _voice_note(stand, 112, "voice-112.ogg", b"x" * 5000)).status_code == 202
    assert post_webhook(web, _voice_note(stand, 113, "voice-113.ogg", None)).status_code == 202
    wait_for(lambda: all(stand.replies(c) for c in (111, 112, 113)), timeout=20)
    for call in stand.bot_calls:
        attachment = call["messages"][0]["attachments"][0]
        assert attachment["file_type"] == "audio" and "transcribed_text" not in attachment
    assert len(stand.transcriptions) == 1  # the too large and the missing one never got that far
    assert rdb.hget(keys.stats("default"), "transcriptions_failed") == "3"
