"""POST JSON with an explicit timeout and bounded retries with backoff.

Retried: connection failures (nothing was sent), 429 (honouring Retry-After,
capped) and 5xx. Not retried: other 4xx, and a read timeout on a call that is
not idempotent (Chatwoot's message create): the request may have taken effect,
so the error is raised with ``ambiguous=True`` instead of posting twice.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from app.errors import OutboundError

__all__ = ["RETRY_AFTER_CAP_SECONDS", "backoff_seconds", "new_session", "post_json"]

log = logging.getLogger(__name__)
RETRY_AFTER_CAP_SECONDS = 30.0


def new_session() -> requests.Session:
    """A keep-alive session for one remote.

    requests re-reads proxy variables, ``.netrc`` and CA-bundle variables from
    the environment on every call (about a millisecond each, the largest cost
    of a local POST). When none of them is set, it is told not to look."""
    session = requests.Session()
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
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """POST ``payload``; return the 2xx response or raise ``error``."""
    last: OutboundError | None = None
    wait = 0.0
    for attempt in range(retries + 1):
        if attempt:
            sleep(wait)
        try:
            response = session.post(url, json=payload, headers=headers, timeout=(min(3.05, timeout), timeout))
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
        last = error(f"{_host(url)} answered {response.status_code}", status=response.status_code)
        if response.status_code == 429:
            wait = _retry_after(response, attempt)
        elif response.status_code >= 500:
            wait = backoff_seconds(attempt)
        else:
            raise last
        log.warning(
            "outbound retry host=%s status=%s attempt=%d", _host(url), response.status_code, attempt + 1
        )
    assert last is not None
    raise last


def _nothing_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established (refused, DNS, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    inner = exc.args[0] if exc.args else None
    return isinstance(getattr(inner, "reason", inner), NewConnectionError)


def _host(url: str) -> str:
    return url.split("/")[2] if "://" in url else url
