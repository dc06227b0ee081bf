"""GET /status: the operator's page, behind STATUS_BASIC_AUTH, against the real Redis."""

from __future__ import annotations

import base64
import json
import re
import time

import redis

from app import keys
from app.analytics import LoggedFragment, log_fragments, record_gaps
from app.ops import refresh_gauges
from app.payload import StoredMessage
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, make_client, post_webhook

AUTH = {"Authorization": "Basic " + base64.b64encode(b"ops:st4tus-pass").decode()}


def _web(redis_url: str):  # type: ignore[no-untyped-def]
    return make_client(base_env(redis_url, "http://127.0.0.1:9", STATUS_BASIC_AUTH="ops:st4tus-pass"))


def _dead_letter(client: redis.Redis, conv: str, text: str, ambiguous: bool = False) -> None:
    message = StoredMessage(int(conv) * 10, conv, 1, text, time.time()).to_json()
    entry = {
        "conversation_id": conv,
        "stage": "chatwoot",
        "error": "422",
        "messages": [message],
        "ambiguous": ambiguous,
    }
    client.rpush(keys.dead_letters("default"), json.dumps(entry))


def test_the_status_page_is_off_until_it_has_credentials(redis_url: str, rdb: redis.Redis) -> None:
    assert make_client(base_env(redis_url, "http://127.0.0.1:9")).get("/status").status_code == 404
    web = _web(redis_url)
    refused = web.get("/status")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ops:nope").decode()}
    assert web.get("/status", headers=wrong).status_code == 401


def test_the_page_shows_each_companys_queue_workers_dead_letters_and_batching(redis_url: str, rdb) -> None:
    web = _web(redis_url)
    for conversation in (61, 61, 62):
        post_webhook(web, cw.message("hi", conversation))
    refresh_gauges(rdb, ["default"])
    rdb.zadd(keys.worker_heartbeats(), {"worker-1@host": rdb.time()[0]})
    _dead_letter(rdb, "63", "refused")
    record_gaps(rdb, "default", "64", [100.0, 102.5, 104.0, 130.0])
    pipe = rdb.pipeline()
    log_fragments(pipe, "default", [LoggedFragment("contact-1", 100.0, "opening")], length=100)
    log_fragments(pipe, "default", [LoggedFragment("contact-1", 102.0, "complete")], length=100)
    pipe.execute()
    page = web.get("/status", headers=AUTH)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert re.search(r"messages waiting or in flight</th><td>3<", html)
    assert "worker-1@host" in html and "dead letters waiting</th><td>1<" in html
    assert "/status/default/conversations/61" in html  # the busiest conversations link to their state
    assert "<svg" in html and "current window" in html  # the gap histogram and its reading
    assert "set BATCH_WINDOW_SECONDS to" in html  # the recommendation, in words
    assert "The smart window on the latest 2 fragments (1 contacts)" in html  # analytics' estimate
    # "oi", then 2 s later a question: the 1 s sliding window splits them, smart holds the greeting
    assert "<td>current (sliding)</td><td>0.0%</td>" in html and "<td>smart</td><td>100.0%</td>" in html
    conversation = web.get("/status/default/conversations/61", headers=AUTH).get_data(as_text=True)
    assert "waiting</th><td>2<" in conversation


def test_a_dead_letter_is_replayed_from_the_page_only_when_confirmed(
    redis_url: str, rdb: redis.Redis
) -> None:
    web = _web(redis_url)
    _dead_letter(rdb, "71", "first")
    _dead_letter(rdb, "72", "maybe answered", ambiguous=True)
    html = web.get("/status", headers=AUTH).get_data(as_text=True)
    token = re.search(r"name=token value=(\w+)", html).group(1)  # type: ignore[union-attr]
    url = "/status/default/dead-letters/replay"
    assert web.post(url, data={"index": "0", "confirm": "yes"}, headers=AUTH).status_code == 403  # no token
    assert (
        web.post(url, data={"index": "0", "token": token}, headers=AUTH).status_code == 400
    )  # not confirmed
    ambiguous = web.post(url, data={"index": "1", "token": token, "confirm": "yes"}, headers=AUTH)
    assert ambiguous.status_code == 400 and rdb.llen(keys.dead_letters("default")) == 2
    done = web.post(url, data={"index": "0", "token": token, "confirm": "yes"}, headers=AUTH)
    assert done.status_code == 303
    assert [json.loads(m)["content"] for m in rdb.lrange(keys.queue("default", "71"), 0, -1)] == ["first"]
    confirmed = {"index": "0", "token": token, "confirm": "yes", "ambiguous": "yes"}
    assert web.post(url, data=confirmed, headers=AUTH).status_code == 303
    assert rdb.llen(keys.dead_letters("default")) == 0 and rdb.llen(keys.queue("default", "72")) == 1


def test_the_page_says_what_happened_in_the_last_hour_and_who_holds_conversations(
    redis_url: str, rdb
) -> None:
    web = _web(redis_url)
    rdb.hset(keys.stats("default"), mapping={"replies_sent": 10, "replies_failed": 1})
    refresh_gauges(rdb, ["default"])  # the worker's pass keeps a snapshot of the counters
    rdb.hset(keys.stats("default"), mapping={"replies_sent": 14, "replies_failed": 2})
    refresh_gauges(rdb, ["default"])
    for conversation in (81, 82):
        rdb.set(keys.handoff("default", conversation), "agent")
    html = web.get("/status", headers=AUTH).get_data(as_text=True)
    assert re.search(r"replies sent / failed in the last hour</th><td>4 / 1 \(over the last 0 min", html)
    assert "conversations held by humans now</th><td>2<" in html


def test_replay_all_leaves_the_ambiguous_ones_unless_ticked(redis_url: str, rdb: redis.Redis) -> None:
    web = _web(redis_url)
    _dead_letter(rdb, "91", "one")
    _dead_letter(rdb, "92", "maybe", ambiguous=True)
    _dead_letter(rdb, "93", "two")
    html = web.get("/status", headers=AUTH).get_data(as_text=True)
    token = re.search(r"name=token value=(\w+)", html).group(1)  # type: ignore[union-attr]
    url = "/status/default/dead-letters/replay-all"
    assert web.post(url, data={"token": token}, headers=AUTH).status_code == 400  # not confirmed
    assert web.post(url, data={"token": token, "confirm": "yes"}, headers=AUTH).status_code == 303
    assert rdb.llen(keys.dead_letters("default")) == 1  # the ambiguous one stays
    assert rdb.llen(keys.queue("default", "91")) == 1 and rdb.llen(keys.queue("default", "93")) == 1
    assert (
        web.post(url, data={"token": token, "confirm": "yes", "ambiguous": "yes"}, headers=AUTH).status_code
        == 303
    )
    assert rdb.llen(keys.dead_letters("default")) == 0
