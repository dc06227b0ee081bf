"""Webhook authentication: Chatwoot's HMAC signature, or a shared token.

Chatwoot (``lib/webhooks/trigger.rb``, v4.11.2+) sends
``X-Chatwoot-Signature: sha256=<hex>`` with the hex of
HMAC-SHA256(secret, "<X-Chatwoot-Timestamp>.<raw body>"). Older Chatwoot
cannot sign, so a shared ``WEBHOOK_TOKEN`` (``?token=`` or ``X-Webhook-Token``)
is accepted instead.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from app.settings import CompanyConfig

__all__ = ["MAX_SIGNATURE_AGE_SECONDS", "AuthError", "authenticate", "sign"]

MAX_SIGNATURE_AGE_SECONDS = 300
_FUTURE_SKEW_SECONDS = 60


class AuthError(Exception):
    """The request is not authenticated (answered with 401); says why."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Chatwoot-Signature`` value Chatwoot sends for this body."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _verify_signature(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    signature = headers.get("X-Chatwoot-Signature", "")
    timestamp = headers.get("X-Chatwoot-Timestamp", "")
    if not timestamp:
        raise AuthError("X-Chatwoot-Timestamp header missing")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise AuthError("X-Chatwoot-Timestamp is not a unix time") from None
    if now - sent_at > MAX_SIGNATURE_AGE_SECONDS:
        raise AuthError("X-Chatwoot-Timestamp older than 5 minutes (replay refused)")
    if sent_at - now > _FUTURE_SKEW_SECONDS:
        raise AuthError("X-Chatwoot-Timestamp is in the future")
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise AuthError("X-Chatwoot-Signature does not match the body")


def _verify_token(token: str, headers: Mapping[str, str], query_token: str | None) -> None:
    given = headers.get("X-Webhook-Token") or query_token or ""
    if not given:
        raise AuthError("webhook token missing (?token= or X-Webhook-Token)")
    if not hmac.compare_digest(token.encode(), given.encode()):
        raise AuthError("webhook token is wrong")


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
        raise AuthError("no webhook secret configured: set CHATWOOT_WEBHOOK_SECRET or WEBHOOK_TOKEN")
    if secret and (headers.get("X-Chatwoot-Signature") or not token):
        if not headers.get("X-Chatwoot-Signature"):
            raise AuthError("X-Chatwoot-Signature header missing")
        _verify_signature(secret, headers, body, now)
        return "signature"
    _verify_token(token or "", headers, query_token)
    return "token"
