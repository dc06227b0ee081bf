"""Follow-ups on silence (FOLLOW_UP_AFTER_MINUTES): the contact does not answer the bot's
reply, and at each mark a follow-up goes out — FOLLOW_UP_MESSAGES, or the bot asked with
"follow_up": n — once, surviving a worker restart; a human, a resolve or a newer answer
cancels or restarts the rest. The clock is moved through Redis (the mark's due time),
never by sleeping the minutes. Through the real pipeline, with the worker's housekeeping."""

from __future__ import annotations

import pytest
import redis

from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import fault_env, make_client, post_webhook
from tests.support import Stand, Worker, wait_for

pytestmark = pytest.mark.slow


def _mark_passes(rdb: redis.Redis, conversation: int) -> None:
    """The next mark is due now: its due time moved through Redis."""
    assert rdb.zscore(keys.follow_ups("default"), str(conversation)) is not None
    rdb.zadd(keys.follow_ups("default"), {str(conversation): rdb.time()[0] - 1})


def _idle(rdb: redis.Redis, conversation: int) -> bool:
    return not rdb.exists(keys.queue("default", conversation), keys.processing("default", conversation))


def test_each_mark_sends_its_follow_up_once_and_the_ladder_survives_a_restart(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    env = fault_env(
        redis_url,
        stand,
        tmp_path,
        FOLLOW_UP_AFTER_MINUTES="30,240",
        FOLLOW_UP_MESSAGES="Ainda está aí?|Posso ajudar em algo mais?",
    )
    first = Worker(env, "follow-1", housekeeping=True).start(rdb)
    workers.append(first)
    web = make_client(env)
    assert post_webhook(web, cw.message("quanto custa?", 1201)).status_code == 202
    wait_for(lambda: stand.replies(1201) == ["quanto custa?"], timeout=15)
    wait_for(lambda: rdb.zscore(keys.follow_ups("default"), "1201") is not None, timeout=5)
    since = float(rdb.hget(keys.follow_up("default", 1201), "since"))
    assert rdb.zscore(keys.follow_ups("default"), "1201") == pytest.approx(since + 30 * 60, abs=0.01)

    _mark_passes(rdb, 1201)
    wait_for(lambda: len(stand.replies(1201)) == 2, timeout=10)
    assert stand.replies(1201)[1] == "Ainda está aí?"
    # The next mark is written just after the follow-up is posted: wait for it, then check it.
    wait_for(lambda: rdb.zscore(keys.follow_ups("default"), "1201") is not None, timeout=5)
    assert rdb.zscore(keys.follow_ups("default"), "1201") == pytest.approx(since + 240 * 60, abs=0.01)

    first.stop()  # a redeploy: the ladder is in Redis
    workers.append(Worker(env, "follow-2", housekeeping=True).start(rdb))
    workers.append(Worker(env, "follow-3", housekeeping=True).start(rdb))  # two at once: still once
    _mark_passes(rdb, 1201)
    wait_for(lambda: len(stand.replies(1201)) == 3, timeout=10)
    assert stand.replies(1201)[2] == "Posso ajudar em algo mais?"
    wait_for(lambda: not rdb.exists(keys.follow_up("default", 1201)), timeout=5)
    assert rdb.zscore(keys.follow_ups("default"), "1201") is None  # the ladder is done
    assert rdb.hget(keys.stats("default"), "follow_ups_sent") == "2"
    assert len(stand.replies(1201)) == 3


def test_a_human_a_resolve_or_a_newer_answer_cancels_or_restarts_the_rest_and_the_bot_can_write_them(
    redis_url: str, rdb: redis.Redis, stand: Stand, workers: list[Worker], tmp_path
) -> None:
    stand.reset()
    stand.bot_answer = lambda body: {
        "reply": f"seguimento {body['follow_up']}" if body.get("follow_up") else f"re: {body['text']}"
    }
    env = fault_env(redis_url, stand, tmp_path, FOLLOW_UP_AFTER_MINUTES="30")
    workers.append(Worker(env, "follow", housekeeping=True).start(rdb))
    web = make_client(env)
    for conversation in (1202, 1203, 1204):
        assert post_webhook(web, cw.message("oi", conversation)).status_code == 202
    wait_for(lambda: all(stand.replies(c) == ["re: oi"] for c in (1202, 1203, 1204)), timeout=15)
    wait_for(lambda: all(rdb.exists(keys.follow_up("default", c)) for c in (1202, 1203, 1204)), timeout=5)

    # 1202: an agent answers the contact: the bot's follow-up is off.
    assert post_webhook(web, cw.agent_reply("Oi! Sou a Ana.", 1202)).status_code == 200
    # 1203: the conversation is resolved.
    assert post_webhook(web, cw.status_changed(1203, "resolved", previous="pending")).status_code == 200
    # 1204: the contact answers; the bot's newer answer starts the ladder again.
    before = float(rdb.hget(keys.follow_up("default", 1204), "since"))
    assert post_webhook(web, cw.message("e amanhã?", 1204)).status_code == 202
    wait_for(lambda: stand.replies(1204) == ["re: oi", "re: e amanhã?"], timeout=15)
    wait_for(lambda: float(rdb.hget(keys.follow_up("default", 1204), "since") or 0) > before, timeout=5)

    for conversation in (1202, 1203, 1204):
        _mark_passes(rdb, conversation)
    wait_for(lambda: len(stand.replies(1204)) == 3, timeout=10)
    assert stand.replies(1204)[2] == "seguimento 1"  # the bot wrote it, asked with "follow_up": 1
    follow_up_call = [c for c in stand.bot_calls if c.get("follow_up")]
    assert [c["conversation_id"] for c in follow_up_call] == ["1204"] and follow_up_call[0]["messages"] == []
    wait_for(lambda: rdb.hget(keys.stats("default"), "follow_ups_cancelled") == "2", timeout=10)
    assert stand.replies(1202) == ["re: oi"] and stand.replies(1203) == ["re: oi"]
    assert all(_idle(rdb, c) for c in (1202, 1203, 1204))
