"""Posting a reply once when Chatwoot leaves the outcome unknown (a 5xx, a timeout, a crash
inside the POST): the real Drainer and Chatwoot client against the local Chatwoot stand-in
and a real Redis; each run driven by hand (no worker: nothing here depends on timing)."""

from __future__ import annotations

import json

import redis

from app.bots import EchoBot
from app.chatwoot.client import make_replier
from app.chatwoot.messages import StoredMessage
from app.drain import Drainer
from app.settings import load_settings
from app.store import keys
from app.store.client import redis_now
from app.store.scripts import Scripts
from tests.conftest import base_env
from tests.support import Stand

CONV = "42"


def drainer(redis_url: str, rdb: redis.Redis, stand: Stand, **env: str) -> Drainer:
    """The real Drainer of conversation 42, holding lease T1, posting to the stand-in."""
    settings = load_settings(base_env(redis_url, stand.url, BOT_BACKEND="echo", **env))
    company = settings.companies["default"]
    rdb.set(keys.lease("default", CONV), "T1", px=20000)
    replier = make_replier(
        company, rdb, timeout=settings.chatwoot_timeout_seconds, retries=settings.outbound_retries
    )
    return Drainer(rdb, Scripts(rdb), settings, company, CONV, "T1", EchoBot(), replier)


def queue(rdb: redis.Redis, message_id: int, content: str) -> None:
    message = StoredMessage(message_id, CONV, 1, content, received_at=redis_now(rdb) - 30)
    rdb.rpush(keys.queue("default", CONV), message.to_json())


def dead_letters(rdb: redis.Redis) -> list[dict]:
    return [json.loads(raw) for raw in rdb.lrange(keys.dead_letters("default"), 0, -1)]


def test_a_5xx_after_chatwoot_created_the_reply_is_settled_by_read_back_not_posted_again(
    redis_url: str, rdb: redis.Redis, stand: Stand
) -> None:
    """Review finding 3: Chatwoot creates the reply, then the proxy in front of it answers
    502. Posting again would send it twice; with a user token the reply is found."""
    stand.reset()
    stand.can_read = True
    stand.fail_after_create = [502]
    queue(rdb, 1, "what time do you open?")
    assert drainer(redis_url, rdb, stand).run() == "released"
    assert stand.replies(CONV) == ["what time do you open?"]
    assert dead_letters(rdb) == []


def test_with_a_bot_token_a_5xx_on_a_reply_is_dead_lettered_as_ambiguous_not_posted_again(
    redis_url: str, rdb: redis.Redis, stand: Stand
) -> None:
    """Review finding 3, agent-bot token (it cannot read the conversation back): the reply
    may exist, so it is not posted again; the batch is dead-lettered as ambiguous (an
    operator replays it if the contact got nothing) and the conversation moves on."""
    stand.reset()
    stand.fail_after_create = [502]
    queue(rdb, 1, "what time do you open?")
    assert drainer(redis_url, rdb, stand).run() == "released"
    assert stand.replies(CONV) == ["what time do you open?"]
    (letter,) = dead_letters(rdb)
    assert letter["stage"] == "chatwoot" and letter["ambiguous"] is True and "502" in letter["error"]


def test_a_5xx_that_created_nothing_is_posted_once_after_the_read_back(
    redis_url: str, rdb: redis.Redis, stand: Stand
) -> None:
    stand.reset()
    stand.can_read = True
    stand.fail_next = [500]  # refused before anything was created
    queue(rdb, 1, "a table for two")
    assert drainer(redis_url, rdb, stand).run() == "released"
    assert stand.replies(CONV) == ["a table for two"]
    assert dead_letters(rdb) == []


def test_an_ambiguous_timeout_is_settled_by_id_whatever_chatwoots_clock_says(
    redis_url: str, rdb: redis.Redis, stand: Stand
) -> None:
    """Review finding 7: Chatwoot's clock is 10 s behind the worker's. The create answers
    after the gateway's timeout; the read-back must find the reply by id, not by time."""
    stand.reset()
    stand.can_read = True
    stand.clock_offset = -10.0
    stand.message_delay = 1.0
    queue(rdb, 1, "hi there")
    assert drainer(redis_url, rdb, stand, CHATWOOT_TIMEOUT_SECONDS="0.5").run() == "released"
    assert stand.replies(CONV) == ["hi there"]
    assert dead_letters(rdb) == []


def test_a_part_left_pending_by_a_crash_is_found_by_id_whatever_chatwoots_clock_says(
    redis_url: str, rdb: redis.Redis, stand: Stand
) -> None:
    """Review finding 7, crash path: a run died inside the POST of a stored answer (the
    part pending, the reply created by a Chatwoot whose clock is 10 s behind); the run that
    resumes the batch finds the reply instead of posting it again."""
    stand.reset()
    stand.can_read = True
    stand.clock_offset = -10.0
    message = StoredMessage(7, CONV, 1, "book me at 10", received_at=redis_now(rdb) - 30)
    rdb.rpush(keys.processing("default", CONV), message.to_json())
    rdb.hset(
        keys.ledger("default", CONV),
        mapping={
            "answer:7-7": json.dumps({"parts": ["Booked for 10:00."], "handoff": False}),
            "msg:7": "answer:7-7",
            "part:7-7:0": f"pending:{redis_now(rdb)}",  # marked just before the POST that died
        },
    )
    run = drainer(redis_url, rdb, stand)
    run.replier.create_message(1, CONV, "Booked for 10:00.")  # what the dead run's POST created
    assert run.run() == "released"
    assert stand.replies(CONV) == ["Booked for 10:00."]
    assert rdb.hget(keys.stats("default"), "replies_recovered") == "1"
