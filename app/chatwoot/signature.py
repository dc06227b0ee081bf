"""Webhook authentication: Chatwoot's HMAC signature, or a shared token.

Chatwoot (``lib/webhooks/trigger.rb``, v4.11.2+) sends
``X-Chatwoot-Signature: sha256=<hex>`` with the hex of
HMAC-SHA256(secret, "<X-Chatwoot-Timestamp>.<raw body>"). Older Chatwoot
cannot sign, so a shared ``WEBHOOK_TOKEN`` (``?token=`` or ``X-Webhook-Token``)
is accepted instead — only by a company without a secret: with a secret the
signature is required (a token alone would give up body integrity and the
replay window).

``AuthError``'s message is for the log; the caller answers every failure with
the same generic 401 body, so the answer does not tell an attacker which mode a
company uses or what was wrong.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from app.errors import GatewayError
from app.settings import CompanyConfig

__all__ = ["KINDS", "MAX_SIGNATURE_AGE_SECONDS", "AuthError", "authenticate", "sign"]

MAX_SIGNATURE_AGE_SECONDS = 300
_FUTURE_SKEW_SECONDS = 60


class AuthError(GatewayError):
    """The request is not authenticated (answered with 401). The message says why,
    for the log; ``kind`` is one of ``KINDS``, for /metrics."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


KINDS = (
    "no_secret",
    "signature_missing",
    "timestamp_missing",
    "timestamp_invalid",
    "timestamp_stale",
    "timestamp_future",
    "signature_wrong",
    "token_missing",
    "token_wrong",
)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Chatwoot-Signature`` value Chatwoot sends for this body."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _verify_signature(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    signature = headers.get("X-Chatwoot-Signature", "")
    timestamp = headers.get("X-Chatwoot-Timestamp", "")
    if not timestamp:
        raise AuthError("X-Chatwoot-Timestamp header missing", "timestamp_missing")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise AuthError("X-Chatwoot-Timestamp is not a unix time", "timestamp_invalid") from None
    if now - sent_at > MAX_SIGNATURE_AGE_SECONDS:
        raise AuthError("X-Chatwoot-Timestamp older than 5 minutes (replay refused)", "timestamp_stale")
    if sent_at - now > _FUTURE_SKEW_SECONDS:
        raise AuthError("X-Chatwoot-Timestamp is in the future", "timestamp_future")
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise AuthError("X-Chatwoot-Signature does not match the body", "signature_wrong")


def _verify_token(token: str, headers: Mapping[str, str], query_token: str | None) -> None:
    given = headers.get("X-Webhook-Token") or query_token or ""
    if not given:
        raise AuthError("webhook token missing (?token= or X-Webhook-Token)", "token_missing")
    if not hmac.compare_digest(token.encode(), given.encode()):
        raise AuthError("webhook token is wrong", "token_wrong")


def authenticate(
    company: CompanyConfig,
    headers: Mapping[str, str],
    body: bytes,
    query_token: str | None,
    now: float,
) -> str:
    """Return how the request was authenticated, or raise ``AuthError``."""
    secret, token = company.chatwoot_webhook_secret, company.webhook_token
    if not secret and not token:
        raise AuthError(
            "no webhook secret configured: set CHATWOOT_WEBHOOK_SECRET or WEBHOOK_TOKEN", "no_secret"
        )
    if secret:
        if not headers.get("X-Chatwoot-Signature"):
            raise AuthError(
                "X-Chatwoot-Signature header missing (a secret is set: the token is not enough)",
                "signature_missing",
            )
        _verify_signature(secret, headers, body, now)
        return "signature"
    _verify_token(token or "", headers, query_token)
    return "token"
