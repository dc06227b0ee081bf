"""What the end-to-end benchmarks run against, set up and torn down in one place.

``local_stack``: a fresh redis-server on a free port and the tests' local
Chatwoot and HTTP bot (``tests.support.Stand``), with the gateway environment
pointing at them (quiet logs). ``gunicorn_web``: the gateway behind gunicorn,
as start.sh runs it. ``post_in_order``: signed webhooks from several client
threads, each group (one conversation's fragments) in order.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import free_port, gunicorn, wait_http  # noqa: E402
from tests.conftest import base_env, signed_headers  # noqa: E402
from tests.support import RedisServer, Stand  # noqa: E402


@dataclass(frozen=True)
class Stack:
    stand: Stand
    env: dict[str, str]
    client: redis.Redis


@contextmanager
def local_stack(**env: str) -> Iterator[Stack]:
    server = RedisServer(Path(tempfile.mkdtemp()))
    server.start()
    stand = Stand()
    try:
        settings = base_env(
            server.url, stand.url, LOG_LEVEL="WARNING", TEST_LOG_DIR=tempfile.mkdtemp(), **env
        )
        yield Stack(stand, settings, redis.Redis.from_url(server.url))
    finally:
        stand.close()
        server.stop()


@contextmanager
def gunicorn_web(env: dict[str, str], workers: int = 2) -> Iterator[tuple[subprocess.Popen, str]]:
    """The gateway under gunicorn; yields the process and the webhook URL of company ``default``."""
    port = free_port()
    web = gunicorn("wsgi:app", port, env, workers)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield web, f"http://127.0.0.1:{port}/webhook/chatwoot/default"
    finally:
        web.terminate()
        web.wait(timeout=10)


def post_in_order(
    url: str, groups: Iterable[Sequence[bytes]], threads: int = 8, deliveries: bool = False
) -> None:
    """POST every body, signed, expecting 202; groups run concurrently, a group's bodies in order.
    ``deliveries``: each with its own ``X-Chatwoot-Delivery`` id, as signed Chatwoot deliveries carry."""
    session = requests.Session()

    def post(group: Sequence[bytes]) -> None:
        for body in group:
            extra = {"X-Chatwoot-Delivery": str(uuid.uuid4())} if deliveries else {}
            response = session.post(url, data=body, headers=signed_headers(body, **extra), timeout=10)
            assert response.status_code == 202, response.text

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, groups))
