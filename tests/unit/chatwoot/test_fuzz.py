"""Property test: 10,000 generated bodies and headers thrown at the webhook.

Never a 5xx with Redis up; every answer is JSON naming a status or a reason;
nothing is enqueued unless the body is a valid incoming message *and* the
request is authenticated; a 202 always means exactly one more stored message.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.chatwoot.messages import StoredMessage
from app.chatwoot.payload import parse_webhook
from app.chatwoot.signature import sign
from tests import chatwoot_payloads as cw
from tests.conftest import SECRET, base_env, make_client

# Text as an LLM or a phone may send it: lone UTF-16 surrogates (an emoji cut in half,
# which json.dumps writes as a "\\ud83d" escape) mixed with letters, digits, punctuation.
texts = st.text(max_size=20) | st.text(st.characters(categories=["Cs", "Ll", "Nd", "Po", "So"]), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "id",
    "content",
    "message_type",
    "private",
    "sender",
    "conversation",
    "account",
    "attachments",
    "event",
]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "mutated", "valid", "status", "agent"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "status":  # a status event: its status reaches Redis (the last seen status)
        return json.dumps(cw.status_changed(draw(st.integers(1, 10**9)), draw(texts))).encode()
    if kind == "agent":  # an agent's reply: its content is hashed (the own-reply digest)
        return json.dumps(cw.agent_reply(draw(texts), draw(st.integers(1, 10**9)), draw(texts))).encode()
    payload = cw.message(draw(texts), draw(st.integers(1, 10**9)), message_id=draw(st.integers(1, 10**12)))
    if kind == "mutated":
        for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
            payload[field] = draw(json_values)
    return json.dumps(payload).encode()


@st.composite
def headers(draw: st.DrawFn, body: bytes) -> tuple[dict[str, str], bool]:
    """Headers, and whether they carry a valid signature."""
    result = {
        "Content-Type": draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=utf-8",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                ]
            )
        )
    }
    auth = draw(st.sampled_from(["valid", "stale", "wrong", "garbage", "none", "body_only"]))
    now = int(time.time())
    ts = str(now - 400) if auth == "stale" else str(now)
    if auth in ("valid", "stale"):
        result |= {"X-Chatwoot-Timestamp": ts, "X-Chatwoot-Signature": sign(SECRET, ts, body)}
    elif auth == "wrong":
        result |= {"X-Chatwoot-Timestamp": ts, "X-Chatwoot-Signature": sign("not-the-secret", ts, body)}
    elif auth == "body_only":
        import hashlib
        import hmac

        result |= {
            "X-Chatwoot-Timestamp": ts,
            "X-Chatwoot-Signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        }
    elif auth == "garbage":
        result |= {
            "X-Chatwoot-Timestamp": draw(
                st.text(max_size=12).filter(lambda s: "\n" not in s and "\r" not in s)
            ),
            "X-Chatwoot-Signature": draw(
                st.text(max_size=70).filter(lambda s: "\n" not in s and "\r" not in s)
            ),
        }
    if draw(st.booleans()):
        result["X-Chatwoot-Delivery"] = draw(st.uuids()).hex
    return result, auth == "valid"


def _is_valid_message(body: bytes) -> bool:
    try:
        return isinstance(parse_webhook(json.loads(body), 0), StoredMessage)
    except Exception:
        return False


def _stored(client: redis.Redis) -> int:
    return sum(client.llen(k) for k in client.scan_iter("default:webhook_queue:*", count=1000))


@pytest.mark.slow
def test_ten_thousand_generated_requests(redis_url: str, rdb: redis.Redis) -> None:
    web = make_client(
        base_env(redis_url, "http://127.0.0.1:9", BATCH_WINDOW_SECONDS="600", BATCH_MAX_WAIT_SECONDS="600")
    )
    counts = {"accepted": 0, "requests": 0}

    @settings(
        max_examples=10_000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        body = data.draw(bodies())
        hdrs, signed = data.draw(headers(body))
        response = web.post("/webhook/chatwoot/default", data=body, headers=hdrs)
        counts["requests"] += 1
        assert response.status_code < 500, (response.status_code, body[:200])
        answer = response.get_json(silent=True)
        assert isinstance(answer, dict) and (answer.get("status") or answer.get("reason")), response.data[
            :200
        ]
        if response.status_code == 202:
            assert signed and hdrs["Content-Type"].startswith("application/json") and _is_valid_message(body)
            counts["accepted"] += 1

    check()
    assert counts["requests"] >= 10_000
    assert counts["accepted"] >= 50, counts  # the accepting path was exercised too
    assert _stored(rdb) == counts["accepted"]  # nothing stored without a 202, nothing lost after one
