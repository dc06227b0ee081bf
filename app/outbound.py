"""POST JSON with an explicit timeout and bounded retries with backoff.

Retried: connection failures (nothing was sent), 429 (honouring Retry-After,
capped) and, for an idempotent call, 5xx. Not retried: other 4xx; and, on a
call that is not idempotent (Chatwoot's message create), a read timeout, a
connection lost after the request went out, or a 5xx: the request may have
taken effect (a proxy's 502/504 after the app created the message, a listener
failing after the commit), so the error is raised with ``ambiguous=True``
instead of posting twice. The caller settles it (read-back) or records it.

A ``deadline`` bounds the whole call, retries and the body included: a
server that sends its headers and then a byte a second is cut at the deadline
(requests' read timeout applies to each read, so it alone never fires while
bytes trickle in). The body is then read chunk by chunk with the socket's
timeout set to what is left, and capped at ``MAX_ANSWER_BYTES``.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests
import requests.adapters
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError

from app.errors import OutboundError

__all__ = [
    "MAX_ANSWER_BYTES",
    "RETRY_AFTER_CAP_SECONDS",
    "backoff_seconds",
    "new_session",
    "post_json",
    "read_body",
]

log = logging.getLogger(__name__)
RETRY_AFTER_CAP_SECONDS = 30.0
MAX_ANSWER_BYTES = 1024 * 1024


POOL_CONNECTIONS = 128  # kept-alive connections per host: a worker's threads share one session


def new_session() -> requests.Session:
    """A keep-alive session for one remote, shared by a worker's threads.

    requests re-reads proxy variables, ``.netrc`` and CA-bundle variables from
    the environment on every call (about a millisecond each, the largest cost
    of a local POST). When none of them is set, it is told not to look. Its
    connection pool keeps ``POOL_CONNECTIONS`` per host (requests keeps 10: the
    rest of a busy pool's connections were closed after each call)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_CONNECTIONS)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    names = {name.lower() for name in os.environ}
    if not any(n.endswith("_proxy") for n in names) and not names & {"requests_ca_bundle", "curl_ca_bundle"}:
        session.trust_env = False
    return session


def backoff_seconds(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Exponential backoff with jitter for retry number ``attempt`` (0-based)."""
    return min(cap, base * 2**attempt) * random.uniform(0.8, 1.2)


def _retry_after(response: requests.Response, attempt: int) -> float:
    raw = response.headers.get("Retry-After", "")
    try:
        return min(RETRY_AFTER_CAP_SECONDS, max(0.0, float(raw)))
    except ValueError:
        return backoff_seconds(attempt)


def post_json(
    session: requests.Session,
    url: str,
    payload: Any,
    *,
    error: type[OutboundError],
    timeout: float,
    retries: int,
    headers: dict[str, str] | None = None,
    idempotent: bool = False,
    deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
) -> requests.Response:
    """POST ``payload``; return the 2xx response or raise ``error``. ``deadline``
    (seconds) bounds the whole call, body and retries included. With ``files`` the
    request is multipart: ``payload``'s members as form fields, then the files."""
    last: OutboundError | None = None
    wait = 0.0
    end = time.monotonic() + deadline if deadline is not None else None
    for attempt in range(retries + 1):
        if attempt:
            if end is not None and time.monotonic() + wait >= end:
                break
            sleep(wait)
        read = timeout if end is None else min(timeout, end - time.monotonic())
        if read <= 0:
            break
        try:
            # Never follow a redirect: requests keeps custom headers (Chatwoot's
            # api_access_token, a bot's key) when it follows one to another host.
            response = session.post(
                url,
                json=None if files else payload,
                data=payload if files else None,
                files=files,
                headers=headers,
                timeout=(min(3.05, read), read),
                stream=end is not None,
                allow_redirects=False,
            )
            if end is not None:
                _read_body(response, end, error, url)
        except requests.ConnectionError as exc:
            if not idempotent and not _nothing_sent(exc):
                # Reset after the request went out: it may have taken effect.
                raise error(f"connection to {_host(url)} lost mid-request", ambiguous=True) from exc
            last = error(f"connection to {_host(url)} failed: {type(exc).__name__}")
            wait = backoff_seconds(attempt)
            continue
        except requests.Timeout as exc:
            if not idempotent:
                raise error(f"{_host(url)} timed out after the request was sent", ambiguous=True) from exc
            last = error(f"{_host(url)} timed out")
            wait = backoff_seconds(attempt)
            continue
        except requests.RequestException as exc:
            raise error(f"request to {_host(url)} failed: {type(exc).__name__}") from exc
        if response.status_code < 300:
            return response
        if response.is_redirect:
            where = _host(response.headers.get("Location", "")) or _host(url)
            raise error(
                f"{_host(url)} answered {response.status_code}, a redirect to {where}: not followed"
                " (credentials would go with it); configure the final https address",
                status=response.status_code,
            )
        status = response.status_code
        if status >= 500 and not idempotent:
            raise error(
                f"{_host(url)} answered {status}: it may have taken effect", status=status, ambiguous=True
            )
        last = error(f"{_host(url)} answered {status}", status=status)
        if status == 429:
            wait = _retry_after(response, attempt)
        elif status >= 500:
            wait = backoff_seconds(attempt)
        else:
            raise last
        log.warning("outbound retry host=%s status=%s attempt=%d", _host(url), status, attempt + 1)
    if last is None or (end is not None and time.monotonic() >= end - 0.05):
        raise error(f"{_host(url)} did not answer within {deadline:g} s", ambiguous=not idempotent)
    raise last


def _read_body(response: requests.Response, end: float, error: type[OutboundError], url: str) -> None:
    """Read the answer's body before ``end`` (monotonic), at most ``MAX_ANSWER_BYTES``."""
    try:
        response._content = read_body(response, end, MAX_ANSWER_BYTES)  # as requests itself does
    except ValueError:
        raise error(f"{_host(url)} answered more than {MAX_ANSWER_BYTES} bytes") from None


def read_body(response: requests.Response, end: float, limit: int) -> bytes:
    """A streamed response's body, read before ``end`` (monotonic), or
    ``requests.ReadTimeout``; more than ``limit`` bytes raise ``ValueError``.

    The socket's timeout is set before each read, and only while the response still
    holds its connection: once the body is read, urllib3 hands the connection back to
    the session's pool, where another thread may take it, or closes it (the pool is
    full), so a socket captured before the loop may be someone else's, or gone."""
    raw = response.raw
    chunks: list[bytes] = []
    size = 0
    where = _host(response.url or "")
    try:
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise requests.ReadTimeout(f"{where} still sending its answer at the deadline")
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(remaining)
            try:
                chunk = raw.read1(65536)
            except (OSError, ReadTimeoutError, ProtocolError) as exc:
                raise requests.ReadTimeout(f"{where} stalled while sending its answer") from exc
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise ValueError(f"is larger than {limit} bytes")
            chunks.append(chunk)
    except BaseException:
        response.close()
        raise
    return b"".join(chunks)


def _nothing_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    inner = exc.args[0] if exc.args else None
    return isinstance(getattr(inner, "reason", inner), NewConnectionError)


def _host(url: str) -> str:
    """The host (and port) of a URL for messages: never its credentials or path."""
    try:
        parsed = urlparse(url)
        host, port = parsed.hostname or "", parsed.port
    except ValueError:
        return "an unparsable address"
    return f"{host}:{port}" if host and port else host
