"""Who may see /status and post its forms (review 2026-12-03, findings 5, 7, 8):
STATUS_BASIC_AUTH checked (a bcrypt hash with bcrypt, remembered as a digest for
five minutes; a plain password in constant time), failed logins limited per client
and in all, the replay form's token (HMAC of a secret kept in Redis, the company and
the hour) and its same-site check, and the headers of every answer (``secure``)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from urllib.parse import urlparse

import redis
from flask import Response, abort, current_app, request

from app.logs import Sampled
from app.metrics import STATUS_AUTH_FAILURES
from app.settings import is_bcrypt
from app.store import keys

__all__ = ["HEADERS", "authenticate", "same_site", "secure", "token", "token_ok"]


def _credentials() -> tuple[str, str] | None:
    raw = current_app.extensions["gateway"].settings.status_basic_auth
    if not raw:
        return None
    user, _, password = raw.partition(":")
    return user, password


log = logging.getLogger(__name__)


_failure_lines = Sampled(log)


FAILURES_PER_CLIENT, FAILURES_IN_ALL, FAILURE_WINDOW_SECONDS = 10, 100, 60


TOKEN_HOURS = 2  # a page's replay token is accepted this hour and the next


HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _client() -> str:
    """The address of whoever asks: the one the container's proxy saw (it sets
    X-Forwarded-For to it, whatever the client sent) when the request came through it,
    else the peer."""
    peer = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    try:
        behind_proxy = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        behind_proxy = False
    if forwarded and behind_proxy:
        peer = forwarded.rsplit(",", 1)[-1].strip()
    return peer[:64] or "unknown"


def _throttled(client: redis.Redis, address: str) -> bool:
    counts = client.mget(keys.status_failures(address), keys.status_failures())
    return int(counts[0] or 0) >= FAILURES_PER_CLIENT or int(counts[1] or 0) >= FAILURES_IN_ALL


def _count_failure(client: redis.Redis, address: str) -> None:
    pipe = client.pipeline(transaction=False)
    for key in (keys.status_failures(address), keys.status_failures()):
        pipe.set(key, 0, ex=FAILURE_WINDOW_SECONDS, nx=True)  # the window starts at the first failure
        pipe.incr(key)
    pipe.execute()


def _secret(client: redis.Redis) -> str:
    """The random secret replay tokens are derived from, made on first use."""
    secret = client.get(keys.status_secret())
    if secret is None:
        client.set(keys.status_secret(), secrets.token_hex(32), nx=True)
        secret = client.get(keys.status_secret()) or ""
    return secret


def _sign(secret: str, company: str, hour: int) -> str:
    return hmac.new(secret.encode(), f"replay:{company}:{hour}".encode(), hashlib.sha256).hexdigest()[:32]


def token(client: redis.Redis, company: str, hour: int | None = None) -> str:
    """The replay form's token for ``company`` in ``hour`` (this one by default)."""
    return _sign(_secret(client), company, int(time.time() // 3600) if hour is None else hour)


def token_ok(client: redis.Redis, company: str, given: str) -> bool:
    secret, now = _secret(client), int(time.time() // 3600)
    return any(
        hmac.compare_digest(given.encode(), _sign(secret, company, now - back).encode())
        for back in range(TOKEN_HOURS)
    )


def same_site() -> bool:
    """Does the browser say the form comes from this site? ``Sec-Fetch-Site`` when it sends
    one (every current browser); else an ``Origin`` naming another host is refused. A
    same-origin form post carries ``Origin: null`` under the page's no-referrer policy,
    so "null" alone decides nothing; neither header: not a browser (the token decides)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin", "null")
    return origin == "null" or (urlparse(origin).netloc or "").lower() == request.host.lower()


def secure(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def authenticate():  # type: ignore[no-untyped-def]
    credentials = _credentials()
    if credentials is None:
        abort(404)
    given = request.authorization
    challenge = {"WWW-Authenticate": 'Basic realm="gateway status"'}
    if given is None:  # a browser's first request: not a guess
        return Response("status page: credentials required (STATUS_BASIC_AUTH)", 401, challenge)
    client, address = current_app.extensions["gateway"].redis, _client()
    if _throttled(client, address):
        STATUS_AUTH_FAILURES.labels("throttled").inc()
        _failure_lines.log(logging.WARNING, "throttled", "status page: login throttled client=%s", address)
        return Response(
            "status page: too many failed logins, try again in a minute",
            429,
            {"Retry-After": str(FAILURE_WINDOW_SECONDS)},
        )
    ok = (
        given.type == "basic"
        and hmac.compare_digest((given.username or "").encode(), credentials[0].encode())
        and _password_ok(given.password or "", credentials[1])
    )
    if not ok:
        _count_failure(client, address)
        STATUS_AUTH_FAILURES.labels("wrong_credentials").inc()
        _failure_lines.log(logging.WARNING, "wrong", "status page: wrong credentials client=%s", address)
        return Response("status page: credentials required (STATUS_BASIC_AUTH)", 401, challenge)
    return None


_VERIFIED_SECONDS = 300.0


_verified: dict[bytes, float] = {}  # digest of a password checked against the hash -> when


def _password_ok(given: str, stored: str) -> bool:
    """The given password against STATUS_BASIC_AUTH's: a bcrypt hash is checked with
    bcrypt (a good password is then remembered, as a digest, for five minutes in this
    process: the page refreshes every 30 s and each request carries the password);
    a plain one is compared in constant time."""
    if not is_bcrypt(stored):
        return hmac.compare_digest(given.encode(), stored.encode())
    key = hashlib.sha256(f"{stored}\0{given}".encode()).digest()
    now = time.monotonic()
    if now - _verified.get(key, -_VERIFIED_SECONDS) < _VERIFIED_SECONDS:
        return True
    import bcrypt

    if not bcrypt.checkpw(given.encode(), stored.encode()):
        return False
    if len(_verified) > 100:
        _verified.clear()
    _verified[key] = now
    return True
