"""Every answer of the webhook's status table, against a real Redis (no worker)."""

from __future__ import annotations

import json
import time

import pytest
import redis

from app.intake import webhook
from app.intake.webhook import UNAUTHORIZED
from app.ops.queries import refresh_gauges
from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import SECRET, base_env, make_client, post_webhook, signed_headers
from tests.support import free_port


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    return base_env(
        redis_url,
        "http://127.0.0.1:9",
        BATCH_WINDOW_SECONDS="30",
        BATCH_MAX_WAIT_SECONDS="60",
        MAX_QUEUE_PER_CONVERSATION="3",
        MAX_BODY_BYTES="4096",
    )


@pytest.fixture
def web(env, rdb):  # type: ignore[no-untyped-def]
    return make_client(env)


def test_202_queues_the_message_and_schedules_its_batch(web, rdb: redis.Redis) -> None:
    response = post_webhook(web, cw.message("hello", 42, message_id=1))
    assert response.status_code == 202
    body = response.json
    assert body["status"] == "queued" and body["queue_position"] == 1
    assert body["batching"] == {
        "mode": "sliding",
        "window_seconds": 30.0,
        "max_wait_seconds": 60.0,
        "new_batch": True,
        "due_in_seconds": 30.0,
    }
    assert "lease_holder" not in body  # nobody drains it yet: the dispatcher will
    stored = json.loads(rdb.lindex(keys.queue("default", 42), 0))
    assert stored["content"] == "hello" and stored["id"] == 1
    assert abs(rdb.zscore(keys.due("default"), "42") - (stored["received_at"] + 30)) < 0.01
    rdb.set(keys.lease("default", 42), "task#run", px=5000)
    second = post_webhook(web, cw.message("again", 42, message_id=2)).json
    assert second["queue_position"] == 2 and second["lease_holder"] == "task#run"
    assert second["batching"]["new_batch"] is False and 29 < second["batching"]["due_in_seconds"] <= 30


def test_a_fragment_joining_a_batch_costs_one_redis_round_trip(
    web, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every webhook: one EVALSHA on a pooled connection; no publish, no result read
    (the first fragment of a batch included: the dispatcher publishes, not the web)."""
    assert post_webhook(web, cw.message("warm", 44)).status_code == 202  # scripts loaded, pool warm
    sent: list[str] = []
    command, pipeline = redis.Redis.execute_command, redis.client.Pipeline.execute

    def record_command(self, *args, **options):  # type: ignore[no-untyped-def]
        sent.append(str(args[0]))
        return command(self, *args, **options)

    def record_pipeline(self, *args, **options):  # type: ignore[no-untyped-def]
        sent.append("pipeline")
        return pipeline(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", record_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", record_pipeline)
    rdb.config_resetstat()
    sent.clear()
    assert post_webhook(web, cw.message("starts a batch", 45)).status_code == 202
    assert post_webhook(web, cw.message("joins the batch", 45)).status_code == 202
    assert sent == ["EVALSHA", "EVALSHA"]
    assert rdb.info("stats")["total_connections_received"] == 0  # no connection set up


@pytest.mark.parametrize(
    "payload",
    [
        cw.agent_reply("x"),
        cw.private_note("x"),
        cw.bot_own_reply("x"),
        cw.webwidget_triggered(),
        cw.status_changed(42, "resolved"),
        cw.message("tpl", message_type="template"),
    ],
)
def test_200_ignored_with_reason(web, rdb: redis.Redis, payload) -> None:
    response = post_webhook(web, payload)
    assert response.status_code == 200
    assert response.json["status"] == "ignored" and response.json["reason"]
    assert rdb.keys("default:webhook_queue:*") == []


def test_200_duplicate(web) -> None:
    payload = cw.message("hello", 42, message_id=5)
    post_webhook(web, payload)
    response = post_webhook(web, payload)
    assert response.status_code == 200 and "duplicate" in response.json["reason"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"event": "message_created", "id": 1}).encode(), "conversation.id"),
    ],
)
def test_400_names_the_problem(web, body: bytes, reason: str) -> None:
    response = web.post("/webhook/chatwoot/default", data=body, headers=signed_headers(body))
    assert response.status_code == 400 and reason in response.json["reason"]


def test_every_401_answers_alike_and_the_log_and_metrics_say_why(web, caplog) -> None:
    """The answer tells an outsider nothing (which auth mode, what was wrong); the
    operator reads the reason in the log and counts it in /metrics."""
    body = json.dumps(cw.message("hi")).encode()
    url = "/webhook/chatwoot/default"
    before = web.get("/metrics").get_data(as_text=True)
    webhook._refusals._seen.clear()  # sampled: one line a minute per kind, and other tests refuse too
    with caplog.at_level("WARNING", logger="app.intake.webhook"):
        missing = web.post(url, data=body, headers={"Content-Type": "application/json"})
        wrong = web.post(url, data=body, headers=signed_headers(body, secret="nope"))
        stale = web.post(url, data=body, headers=signed_headers(body, timestamp=int(time.time()) - 301))
    answers = {(r.status_code, r.get_data(as_text=True)) for r in (missing, wrong, stale)}
    assert len(answers) == 1 and missing.status_code == 401
    assert missing.json == {"error": "unauthorized", "reason": UNAUTHORIZED}
    logged = caplog.text
    assert "X-Chatwoot-Signature header missing" in logged and "does not match" in logged
    assert "older than 5 minutes" in logged and SECRET not in logged
    after = web.get("/metrics").get_data(as_text=True)
    for kind in ("signature_missing", "signature_wrong", "timestamp_stale"):
        name = f'gateway_webhooks_refused_total{{reason="{kind}"}}'
        assert _sample(after, name) - _sample(before, name) == 1


def test_401_when_no_secret_is_configured(redis_url: str, rdb, caplog) -> None:
    env = base_env(redis_url, "http://127.0.0.1:9")
    del env["CHATWOOT_WEBHOOK_SECRET"]
    with caplog.at_level("WARNING", logger="app.intake.webhook"):
        response = post_webhook(make_client(env), cw.message("hi"))
    assert response.status_code == 401 and response.json["reason"] == UNAUTHORIZED
    assert "CHATWOOT_WEBHOOK_SECRET" in caplog.text  # the operator's log says how to configure one


def test_with_a_secret_a_token_alone_is_refused(redis_url: str, rdb) -> None:
    """Both set: the signature is required (a token gives no body integrity, no replay window)."""
    env = base_env(redis_url, "http://127.0.0.1:9", WEBHOOK_TOKEN="tok-1")
    web = make_client(env)
    body = json.dumps(cw.message("hi")).encode()
    plain = {"Content-Type": "application/json"}
    assert web.post("/webhook/chatwoot/default?token=tok-1", data=body, headers=plain).status_code == 401
    headed = {**plain, "X-Webhook-Token": "tok-1"}
    assert web.post("/webhook/chatwoot/default", data=body, headers=headed).status_code == 401
    assert web.post("/webhook/chatwoot/default", data=body, headers=signed_headers(body)).status_code == 202


def test_refusals_are_logged_once_a_minute_per_kind_and_all_counted(web, caplog) -> None:
    """Anyone can send refused webhooks: they must not flood the log."""
    body = json.dumps(cw.message("hi")).encode()
    before = web.get("/metrics").get_data(as_text=True)
    with caplog.at_level("INFO", logger="app.intake.webhook"):
        for _ in range(50):
            web.post("/webhook/chatwoot/default", data=body, headers=signed_headers(body, secret="nope"))
            post_webhook(web, cw.message("hi"), company="nobody")
    refused = [r for r in caplog.records if "webhook refused" in r.getMessage()]
    assert len(refused) <= 2  # one per kind at most (none if this process logged one this minute)
    after = web.get("/metrics").get_data(as_text=True)
    for kind in ("signature_wrong", "unknown_company"):
        name = f'gateway_webhooks_refused_total{{reason="{kind}"}}'
        assert _sample(after, name) - _sample(before, name) == 50


def test_token_for_older_chatwoot(redis_url: str, rdb) -> None:
    env = base_env(
        redis_url,
        "http://127.0.0.1:9",
        WEBHOOK_TOKEN="tok-1",
        BATCH_WINDOW_SECONDS="30",
        BATCH_MAX_WAIT_SECONDS="60",
    )
    del env["CHATWOOT_WEBHOOK_SECRET"]
    web = make_client(env)
    body = json.dumps(cw.message("hi")).encode()
    ok = web.post(
        "/webhook/chatwoot/default?token=tok-1", data=body, headers={"Content-Type": "application/json"}
    )
    assert ok.status_code == 202
    bad = web.post(
        "/webhook/chatwoot/default?token=tok-2", data=body, headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 401


def test_an_unknown_company_is_refused_exactly_like_a_bad_credential(web) -> None:
    """DESIGN §2: 401 with the same body, signed or not, so company names cannot be probed."""
    unknown = post_webhook(web, cw.message("hi"), company="nobody")
    bad = post_webhook(web, cw.message("hi"), secret="wrong")
    unsigned = web.post("/webhook/chatwoot/nobody", data="{}", headers={"Content-Type": "application/json"})
    known_unsigned = web.post("/webhook/chatwoot/default", data="{}", headers={"Content-Type": "text/plain"})
    for response in (unknown, unsigned, known_unsigned):
        assert (response.status_code, response.json) == (bad.status_code, bad.json)
    assert bad.status_code == 401 and "nobody" not in unknown.get_data(as_text=True)


def test_413_body_too_large(web) -> None:
    body = json.dumps(cw.message("x" * 5000)).encode()
    response = web.post("/webhook/chatwoot/default", data=body, headers=signed_headers(body))
    assert response.status_code == 413 and "4096" in response.json["reason"]


def test_415_not_json(web) -> None:
    """Once authenticated: a stranger gets the 401 whatever it sends."""
    headers = {**signed_headers(b"a=b"), "Content-Type": "text/plain"}
    response = web.post("/webhook/chatwoot/default", data="a=b", headers=headers)
    assert response.status_code == 415 and "application/json" in response.json["reason"]


def test_429_when_the_conversation_is_full_others_unaffected(web) -> None:
    for i in range(3):
        assert post_webhook(web, cw.message(f"m{i}", 42)).status_code == 202
    full = post_webhook(web, cw.message("m3", 42))
    assert full.status_code == 429 and "already holds 3" in full.json["reason"]
    assert post_webhook(web, cw.message("other", 43)).status_code == 202


def test_redis_unreachable_spools_and_a_full_spool_answers_500(redis_url: str, tmp_path) -> None:
    env = base_env(f"redis://127.0.0.1:{free_port()}/0", "http://127.0.0.1:9", DATA_DIR=str(tmp_path))
    response = post_webhook(make_client(env), cw.message("hi"))
    assert response.status_code == 202 and response.json["spooled"] is True
    assert len(list((tmp_path / "spool").glob("spool-*.jsonl"))) == 1
    full = base_env(env["REDIS_URL"], "http://127.0.0.1:9", DATA_DIR=str(tmp_path), SPOOL_MAX_BYTES="10")
    response = post_webhook(make_client(full), cw.message("hi again"))
    assert response.status_code == 500 and "SPOOL_MAX_BYTES" in response.json["reason"]
    assert "Redis unreachable" in response.json["reason"]


def test_health_and_readiness(web, env, rdb: redis.Redis) -> None:
    assert web.get("/healthz").json == {"status": "ok"}
    not_ready = web.get("/readyz")
    assert not_ready.status_code == 503 and "worker" in not_ready.json["reason"]
    rdb.zadd(keys.worker_heartbeats(), {"w1@host": time.time()})
    assert web.get("/readyz").status_code == 200
    env = dict(env, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    down = make_client(env).get("/readyz")
    assert down.status_code == 503 and "Redis" in down.json["reason"]


def test_metrics_count_webhooks_by_result(web, rdb: redis.Redis) -> None:
    post_webhook(web, cw.message("a", 42, message_id=1))
    post_webhook(web, cw.message("a", 42, message_id=1))
    post_webhook(web, cw.agent_reply("agent", 42))
    assert "gateway_messages_waiting{" not in web.get("/metrics").get_data(as_text=True)  # not summed yet
    refresh_gauges(rdb, ["default"])  # the worker's gateway.gauges task
    text = web.get("/metrics").get_data(as_text=True)
    assert 'gateway_webhooks_queued_total{company="default"} 1.0' in text
    assert 'gateway_webhooks_duplicate_total{company="default"} 1.0' in text
    assert 'gateway_webhooks_ignored_total{company="default"} 1.0' in text
    assert 'gateway_messages_waiting{company="default"} 1.0' in text
    assert 'gateway_live_leases{company="default"} 0.0' in text  # scheduled, not yet dispatched
    age = float(text.split('gateway_oldest_message_age_seconds{company="default"} ')[1].split()[0])
    assert 0 <= age < 5
    assert 0 <= _sample(text, 'gateway_gauges_age_seconds{company="default"}') < 5


def test_a_scrape_costs_a_few_commands_per_company_not_one_per_conversation(web, rdb: redis.Redis) -> None:
    for conversation in range(300):
        post_webhook(web, cw.message("hi", 5000 + conversation, message_id=50_000 + conversation))
    refresh_gauges(rdb, ["default"])
    before = rdb.info("stats")["total_commands_processed"]
    text = web.get("/metrics").get_data(as_text=True)
    spent = rdb.info("stats")["total_commands_processed"] - before - 1  # the INFO itself
    assert 'gateway_messages_waiting{company="default"} 300.0' in text
    assert spent <= 12, spent  # counters, gauges, dead letters, histograms, workers, clock


def test_metrics_token_guards_the_scrape(redis_url: str, rdb) -> None:
    web = make_client(base_env(redis_url, "http://127.0.0.1:9", METRICS_TOKEN="m-tok"))
    refused = web.get("/metrics")
    assert refused.status_code == 401 and "METRICS_TOKEN" in refused.json["reason"]
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert web.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    allowed = web.get("/metrics", headers={"Authorization": "Bearer m-tok"})
    assert allowed.status_code == 200 and "gateway_webhooks_queued_total" in allowed.get_data(as_text=True)
    assert web.get("/healthz").status_code == 200  # probes stay open


def _sample(text: str, name: str) -> float:
    line = next((x for x in text.splitlines() if x.startswith(name + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def test_metrics_count_answers_by_status_and_time_them(web) -> None:
    before = web.get("/metrics").get_data(as_text=True)
    post_webhook(web, cw.message("a", 42))
    post_webhook(web, cw.message("b", 43))
    post_webhook(web, cw.message("c", 44), company="nobody")
    web.post(
        "/webhook/chatwoot/default", data="x", headers={**signed_headers(b"x"), "Content-Type": "text/plain"}
    )
    after = web.get("/metrics").get_data(as_text=True)
    for status, added in (("202", 2), ("401", 1), ("415", 1)):
        name = f'gateway_webhook_responses_total{{status="{status}"}}'
        assert _sample(after, name) - _sample(before, name) == added
    count = "gateway_webhook_latency_seconds_count"
    assert _sample(after, count) - _sample(before, count) == 4
    assert 'gateway_batch_size_messages_bucket{company="default",le="1.0"}' in after


def test_429_past_the_companys_conversations_waiting(env, rdb: redis.Redis) -> None:
    """MAX_CONVERSATIONS_WAITING: a company's credential cannot fill the shared Redis with
    one conversation after another; Chatwoot retries a 429 (agent bot)."""
    web = make_client({**env, "MAX_CONVERSATIONS_WAITING": "2"})
    assert post_webhook(web, cw.message("a", 501)).status_code == 202
    assert post_webhook(web, cw.message("b", 502)).status_code == 202
    refused = post_webhook(web, cw.message("c", 503))
    assert refused.status_code == 429 and "MAX_CONVERSATIONS_WAITING" in refused.json["reason"]
    assert post_webhook(web, cw.message("more for a", 501)).status_code == 202  # a waiting one goes on
    assert not rdb.exists(keys.queue("default", "503"))


def test_a_replayed_status_event_is_applied_once(web, rdb: redis.Redis) -> None:
    """Review 2026-12-03, finding 6: a captured conversation_status_changed "pending",
    replayed within the signature's five minutes with its X-Chatwoot-Delivery, ended a
    human's takeover. Every event is applied once per delivery id."""
    captured, delivery = cw.status_changed(601, "pending"), {"X-Chatwoot-Delivery": "real-1"}
    assert post_webhook(web, captured, **delivery).status_code == 200
    assert (
        post_webhook(
            web, cw.agent_reply("I'll take it", 601), **{"X-Chatwoot-Delivery": "real-2"}
        ).status_code
        == 200
    )
    assert rdb.exists(keys.handoff("default", "601"))
    replay = post_webhook(web, captured, **delivery)
    assert replay.status_code == 200 and replay.json["reason"] == "duplicate delivery or message"
    assert rdb.exists(keys.handoff("default", "601"))  # the human keeps it
    again = post_webhook(web, cw.agent_reply("I'll take it", 601), **{"X-Chatwoot-Delivery": "real-2"})
    assert again.json["reason"] == "duplicate delivery or message"
