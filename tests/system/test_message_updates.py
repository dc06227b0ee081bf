"""message_updated through the real pipeline (a real worker, real Redis, the local Chatwoot
stand-in): an edit or a deletion of a message still waiting in its batch, Chatwoot's own
transcript of a voice note arriving later, and an update to a message already answered.
message_updated is never a new message, and never a second turn."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import chatwoot_company, companies_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(redis_url: str, stand: Stand, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    companies = [
        # a window long enough for an edit to land while the message waits
        chatwoot_company("edits", stand, batch_window_seconds=2, batch_max_wait_seconds=4),
        chatwoot_company(
            "chatwoot-transcribes",
            stand,
            transcribe_backend="chatwoot",
            batch_window_seconds=0.5,
            batch_max_wait_seconds=4,
        ),
    ]
    return companies_env(redis_url, tmp_path_factory.mktemp("updates"), companies)


@pytest.fixture(scope="module")
def worker(env: dict[str, str], redis_url: str) -> Iterator[Worker]:
    w = Worker(env, "updates", housekeeping=True).start(redis.Redis.from_url(redis_url))
    yield w
    w.stop()


def send(web, cid: str, payload: dict):  # type: ignore[no-untyped-def]
    return post_webhook(web, payload, company=cid, secret=f"{cid}-secret")


def texts(stand: Stand, conversation: int) -> list[str]:
    with stand.lock:
        return [c["text"] for c in stand.bot_calls if c["conversation_id"] == str(conversation)]


def test_an_edit_while_the_message_waits_is_what_the_bot_sees_once(env, worker, rdb, stand: Stand) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    web = make_client(env)
    created = cw.message("I want to book for Tuesdya", 800)
    assert send(web, "edits", created).status_code == 202
    assert send(web, "edits", cw.message("at 10", 800)).status_code == 202
    edited = send(web, "edits", cw.message_updated(created, content="I want to book for Tuesday"))
    assert edited.status_code == 200 and "sees it as it is now" in edited.json["reason"]
    wait_for(lambda: stand.replies(800), timeout=10)
    time.sleep(0.5)
    assert texts(stand, 800) == ["I want to book for Tuesday at 10"]  # one call, the edited text
    assert stand.replies(800) == ["I want to book for Tuesday at 10"]


def test_a_message_deleted_while_it_waits_never_reaches_the_bot(env, worker, rdb, stand: Stand) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    web = make_client(env)
    assert send(web, "edits", cw.message("hello", 801)).status_code == 202
    oops = cw.message("my card number is 4111 1111 1111 1111", 801)
    assert send(web, "edits", oops).status_code == 202
    deleted = send(web, "edits", cw.message_deleted(oops))
    assert deleted.status_code == 200 and "will not see it" in deleted.json["reason"]
    wait_for(lambda: stand.replies(801), timeout=10)
    time.sleep(0.5)
    assert texts(stand, 801) == ["hello"]


def test_an_update_to_a_message_already_answered_changes_nothing(env, worker, rdb, stand: Stand) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    web = make_client(env)
    created = cw.message("what time do you open?", 802)
    assert send(web, "edits", created).status_code == 202
    wait_for(lambda: stand.replies(802), timeout=10)
    for update in (
        cw.message_updated(created, content="what time do you open on Sunday?"),  # edited late
        cw.message_updated(created),  # a CSAT answer, a status update: same message again
        cw.message_deleted(created),
    ):
        answer = send(web, "edits", update)
        assert answer.status_code == 200 and "nothing changes" in answer.json["reason"]
    time.sleep(2.5)  # longer than the window: no second turn
    assert texts(stand, 802) == ["what time do you open?"] and len(stand.replies(802)) == 1
    assert not rdb.exists(keys.queue("edits", 802))


def test_with_chatwoot_transcribing_a_voice_note_waits_for_its_transcript(
    env, worker, rdb, stand: Stand
) -> None:  # type: ignore[no-untyped-def]
    """TRANSCRIBE_BACKEND=chatwoot: the voice note arrives without text; Chatwoot's transcript
    follows as message_updated. The batch waits for it (not past the max wait), and the bot
    gets the burst once, the transcript in its place."""
    stand.reset()
    web = make_client(env)
    assert send(web, "chatwoot-transcribes", cw.message("I want to book", 803)).status_code == 202
    note = cw.audio(None, 803)
    assert send(web, "chatwoot-transcribes", note).status_code == 202
    time.sleep(1.5)  # past the window (0.5 s): still waiting for the transcript
    assert texts(stand, 803) == []
    transcribed = copy.deepcopy(note)
    transcribed["attachments"][0]["transcribed_text"] = "tomorrow at nine"
    assert send(web, "chatwoot-transcribes", cw.message_updated(transcribed)).status_code == 200
    wait_for(lambda: stand.replies(803), timeout=10)
    assert texts(stand, 803) == ["I want to book [voice note: tomorrow at nine]"]


def test_a_transcript_that_never_comes_holds_the_batch_only_until_the_max_wait(
    env, worker, rdb, stand: Stand
) -> None:  # type: ignore[no-untyped-def]
    stand.reset()
    web = make_client(env)
    started = time.monotonic()
    assert send(web, "chatwoot-transcribes", cw.audio(None, 804)).status_code == 202
    wait_for(lambda: stand.replies(804), timeout=10)
    assert 3.8 < time.monotonic() - started < 6  # BATCH_MAX_WAIT_SECONDS=4, then without text
    assert texts(stand, 804) == ["[voice note]"]
