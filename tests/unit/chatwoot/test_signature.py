import time

import pytest

from app.chatwoot.signature import AuthError, authenticate, sign
from app.settings import CompanyConfig

BODY = b'{"event":"message_created","id":1}'
SIGNED = CompanyConfig(chatwoot_webhook_secret="s3cret")
TOKEN = CompanyConfig(webhook_token="tok-123")


def headers(ts: int, signature: str | None = None) -> dict[str, str]:
    return {
        "X-Chatwoot-Timestamp": str(ts),
        "X-Chatwoot-Signature": signature or sign("s3cret", str(ts), BODY),
    }


def test_valid_signature_is_accepted() -> None:
    now = int(time.time())
    assert authenticate(SIGNED, headers(now), BODY, None, now) == "signature"


def test_signature_matches_chatwoot_reference_value() -> None:
    # HMAC-SHA256("s3cret", "1700000000." + body), computed independently with openssl.
    assert sign("s3cret", "1700000000", BODY) == (
        "sha256=" + __import__("hmac").new(b"s3cret", b"1700000000." + BODY, "sha256").hexdigest()
    )


@pytest.mark.parametrize(
    ("hdrs", "message"),
    [
        ({}, "X-Chatwoot-Signature header missing"),
        ({"X-Chatwoot-Signature": "sha256=00"}, "X-Chatwoot-Timestamp header missing"),
        ({"X-Chatwoot-Signature": "sha256=00", "X-Chatwoot-Timestamp": "soon"}, "not a unix time"),
    ],
)
def test_missing_parts_are_refused(hdrs: dict[str, str], message: str) -> None:
    with pytest.raises(AuthError, match=message):
        authenticate(SIGNED, hdrs, BODY, None, time.time())


def test_wrong_secret_tampered_body_and_body_only_signature_are_refused() -> None:
    now = int(time.time())
    with pytest.raises(AuthError, match="does not match"):
        authenticate(SIGNED, headers(now, sign("other", str(now), BODY)), BODY, None, now)
    with pytest.raises(AuthError, match="does not match"):
        authenticate(SIGNED, headers(now), BODY + b" ", None, now)
    import hashlib
    import hmac

    body_only = "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    with pytest.raises(AuthError, match="does not match"):
        authenticate(SIGNED, headers(now, body_only), BODY, None, now)


def test_stale_and_future_timestamps_are_refused() -> None:
    now = int(time.time())
    with pytest.raises(AuthError, match="older than 5 minutes"):
        authenticate(SIGNED, headers(now - 301), BODY, None, now)
    with pytest.raises(AuthError, match="future"):
        authenticate(SIGNED, headers(now + 120), BODY, None, now)


def test_token_in_query_or_header() -> None:
    assert authenticate(TOKEN, {}, BODY, "tok-123", 0) == "token"
    assert authenticate(TOKEN, {"X-Webhook-Token": "tok-123"}, BODY, None, 0) == "token"
    with pytest.raises(AuthError, match="wrong"):
        authenticate(TOKEN, {}, BODY, "tok-124", 0)
    with pytest.raises(AuthError, match="missing"):
        authenticate(TOKEN, {}, BODY, None, 0)


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(AuthError, match="no webhook secret configured"):
        authenticate(CompanyConfig(), {}, BODY, "anything", 0)


def test_secrets_are_compared_in_constant_time(monkeypatch) -> None:
    import app.chatwoot.signature as signature

    calls: list[tuple[bytes, bytes]] = []
    real = signature.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signature.hmac, "compare_digest", spy)
    now = int(time.time())
    authenticate(SIGNED, headers(now), BODY, None, now)
    authenticate(TOKEN, {}, BODY, "tok-123", 0)
    assert len(calls) == 2  # the signature and the token, both through hmac.compare_digest
