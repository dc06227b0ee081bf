from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.bots import EchoBot
from app.chatwoot.client import DryRunOutbox
from app.chatwoot.signature import sign
from app.drain import Drainer
from app.settings import load_settings
from app.store import keys
from app.store.scripts import Scripts
from app.web import create_app
from tests.support import ROOT, RedisServer, Stand, Worker

SECRET = "whsec-test-secret"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    """The suite's own redis-server on a free port (unless REDIS_URL is set)."""
    if os.environ.get("REDIS_URL"):
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer | None) -> str:
    return redis_server.url if redis_server else os.environ["REDIS_URL"]


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def stand() -> Iterator[Stand]:
    server = Stand()
    yield server
    server.close()


def base_env(redis_url: str, stand_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "REDIS_URL": redis_url,
        "CHATWOOT_BASE_URL": stand_url,
        "CHATWOOT_API_TOKEN": "cw-token",
        "CHATWOOT_WEBHOOK_SECRET": SECRET,
        "BOT_BACKEND": "http",
        "BOT_URL": f"{stand_url}/bot",
        "BOT_TIMEOUT_SECONDS": "10",
        "BATCH_WINDOW_SECONDS": "1",
        "BATCH_MAX_WAIT_SECONDS": "5",
        "LEASE_TTL_SECONDS": "4",
        "SWEEP_INTERVAL_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
        "DATA_DIR": tempfile.mkdtemp(prefix="gateway-data-"),  # the web's spool, never the repo's ./data
    }
    env.update(overrides)
    return env


def fault_env(redis_url: str, stand: Stand, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A worker/web environment for fault tests: short window, lease and sweep."""
    settings = {
        "TEST_LOG_DIR": str(tmp_path),
        "BATCH_WINDOW_SECONDS": "0.3",
        "BATCH_MAX_WAIT_SECONDS": "1",
        "LEASE_TTL_SECONDS": "2",
        "SWEEP_INTERVAL_SECONDS": "0.5",
    }
    return base_env(redis_url, stand.url, **{**settings, **extra})


def openai_env(redis_url: str, stand: Stand, tmp_path: Path, **extra: str) -> dict[str, str]:
    """``fault_env`` with the openai backend on the stand's OpenAI-compatible server."""
    openai = {
        "BOT_BACKEND": "openai",
        "OPENAI_BASE_URL": f"{stand.url}/v1",
        "OPENAI_MODEL": "small-model",
        "OPENAI_API_KEY": "sk-test",
    }
    return fault_env(redis_url, stand, tmp_path, **{**openai, **extra})


def chatwoot_company(cid: str, stand: Stand, **extra: Any) -> dict[str, Any]:
    """One company of a COMPANIES_FILE, served by the local Chatwoot and HTTP bot."""
    return {
        "company_id": cid,
        "chatwoot_base_url": stand.url,
        "chatwoot_api_token": "cw-token",
        "chatwoot_webhook_secret": f"{cid}-secret",
        "bot_backend": "http",
        "bot_url": f"{stand.url}/bot",
        "batch_window_seconds": 0.3,
        "batch_max_wait_seconds": 1,
        **extra,
    }


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Real worker processes a test starts; all stopped after it."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def dry_run_drainer(redis_url: str, rdb: redis.Redis, **env: str) -> Drainer:
    """The real Drainer of conversation 42 of company ``default``, holding lease T1, with the
    echo bot and the dry-run outbox (no Chatwoot): for driving the drain loop step by step."""
    settings = load_settings({**base_env(redis_url, "http://127.0.0.1:9", **env), "CHATWOOT_BASE_URL": ""})
    rdb.set(keys.lease("default", "42"), "T1", px=20000)
    return Drainer(
        rdb,
        Scripts(rdb),
        settings,
        settings.companies["default"],
        "42",
        "T1",
        EchoBot(),
        DryRunOutbox(rdb, "default"),
    )


def companies_env(
    redis_url: str, folder: Path, companies: list[dict[str, Any]], **extra: str
) -> dict[str, str]:
    """A worker/web environment configured by a COMPANIES_FILE written into ``folder``."""
    path = folder / "companies.json"
    path.write_text(json.dumps(companies))
    env = {
        "PATH": os.environ["PATH"],
        "REDIS_URL": redis_url,
        "COMPANIES_FILE": str(path),
        "LEASE_TTL_SECONDS": "4",
        "SWEEP_INTERVAL_SECONDS": "1",
        "TEST_LOG_DIR": str(folder),
        "PYTHONPATH": str(ROOT),  # handlers in tests.bot_handlers
        "DATA_DIR": str(folder / "data"),
    }
    env.update(extra)
    return env


def make_client(env: dict[str, str], **config: Any) -> Any:
    app = create_app({"TESTING": True, "settings": load_settings(env), **config})
    return app.test_client()


@pytest.fixture
def web(env: dict[str, str], worker: Worker, rdb: redis.Redis, stand: Stand) -> Any:
    """A test client of the module's ``env``, its module-scoped ``worker`` draining, Redis
    flushed and the Chatwoot stand-in reset."""
    stand.reset()
    return make_client(env)


def idle(rdb: redis.Redis, conversation: int, company: str = "default") -> bool:
    """Nothing of the conversation waits, is in flight or holds its lease."""
    return not any(
        rdb.exists(key(company, conversation)) for key in (keys.queue, keys.processing, keys.lease)
    )


def signed_headers(
    body: bytes, *, secret: str = SECRET, timestamp: int | None = None, **extra: str
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-Chatwoot-Timestamp": ts,
        "X-Chatwoot-Signature": sign(secret, ts, body),
    }
    headers.update(extra)
    return headers


def post_webhook(client: Any, payload: Any, company: str = "default", **headers: str) -> Any:
    body = json.dumps(payload).encode()
    return client.post(f"/webhook/chatwoot/{company}", data=body, headers=signed_headers(body, **headers))
