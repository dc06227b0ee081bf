"""A Redis at its memory ceiling (maxmemory with noeviction, as the embedded Redis runs
and as check-config demands of any other): nothing accepted is lost, the gateway says
why it answers nothing, a worker started then stays up, and once room is made every
message is answered once (security review 2026-12-03, finding 4: "a start-up that
survives a full Redis")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests import chatwoot_payloads as cw
from tests.conftest import fault_env, make_client, post_webhook
from tests.support import RedisServer, Stand, Worker, boot_start_sh, free_port, wait_for
from tests.system.test_start_sh import _ready, _stop

pytestmark = pytest.mark.slow
FILLER = "filler:"


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, redis.Redis]]:
    """A redis-server of its own (its ceiling is not the suite's), filled to its ceiling."""
    server = RedisServer(tmp_path, extra=("--maxmemory-policy", "noeviction"))
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 2 * 1024 * 1024)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for n in range(100_000):
            client.set(f"{FILLER}{n}", "x" * 4096)
    yield server, client
    server.stop()


def test_a_full_redis_refuses_nothing_it_accepted_and_everything_is_answered_once_room_is_made(
    full_redis: tuple[RedisServer, redis.Redis], stand: Stand, tmp_path: Path
) -> None:
    server, client = full_redis
    env = fault_env(server.url, stand, tmp_path, DATA_DIR=str(tmp_path / "data"))
    web = make_client(env)

    ready = web.get("/readyz")
    assert ready.status_code == 503 and "memory ceiling" in ready.json["reason"]
    metrics = web.get("/metrics").get_data(as_text=True)
    assert "gateway_redis_maxmemory_bytes " in metrics and "gateway_redis_used_memory_bytes " in metrics

    accepted = post_webhook(web, cw.message("are you open on sunday?", 77))
    assert accepted.status_code == 202 and accepted.json["spooled"] is True  # kept, in order

    worker = Worker(env, "ceiling", housekeeping=True).start(client, ready=False)
    try:
        wait_for(lambda: "memory ceiling" in worker.log_path.read_text(), timeout=20)  # it met the ceiling...
        assert worker.proc is not None and worker.proc.poll() is None  # ...and is still up

        client.delete(*client.keys(f"{FILLER}*"))  # an operator made room (purge, a higher ceiling)

        wait_for(lambda: stand.replies(77), timeout=30)
        assert stand.replies(77) == ["are you open on sunday?"]
        wait_for(lambda: web.get("/readyz").status_code == 200, timeout=20)
    finally:
        worker.stop()
    assert stand.replies(77) == ["are you open on sunday?"]  # answered once


def test_start_sh_boots_on_an_embedded_redis_replayed_full_and_answers_once_room_is_made(
    tmp_path: Path,
) -> None:
    """The container's own case: its embedded Redis filled to EMBEDDED_REDIS_MAXMEMORY, the
    container restarted, the append-only file replayed at boot — full from the first
    second. start.sh stays up (no restart loop), /readyz says why, a webhook is kept, and it
    is answered once an operator makes room."""
    port, redis_port = free_port(), free_port()
    data = tmp_path / "data"
    env = {
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),
        "DATA_DIR": str(data),
        "EMBEDDED_REDIS_PORT": str(redis_port),
        "EMBEDDED_REDIS_MAXMEMORY": "8mb",
        "BATCH_WINDOW_SECONDS": "0.3",
        "BATCH_MAX_WAIT_SECONDS": "1",
    }
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "start.log"
    proc = boot_start_sh(env, log)
    try:
        wait_for(lambda: _ready(url) or proc.poll() is not None, timeout=40)
        password = (data / "redis" / "password").read_text().strip()
        embedded = redis.Redis(port=redis_port, password=password, decode_responses=True)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for n in range(100_000):
                embedded.set(f"{FILLER}{n}", "x" * 4096)
    finally:
        _stop(proc, log)

    log = tmp_path / "again.log"
    # The AOF is replayed; a fresh process packs it a little tighter, so the restart gets a
    # slightly lower ceiling to be full from the first second, as a container is whose
    # dataset outgrew it.
    proc = boot_start_sh({**env, "EMBEDDED_REDIS_MAXMEMORY": "6mb"}, log)
    try:
        wait_for(lambda: "memory ceiling" in log.read_text() or proc.poll() is not None, timeout=40)
        time.sleep(3)
        assert proc.poll() is None, log.read_text()[-3000:]  # up, not restarting in a loop
        status, body = wait_for(lambda: _answer(url + "/readyz"), timeout=20)
        assert status == 503 and "memory ceiling" in body["reason"]
        token = (data / "webhook_token").read_text().strip()  # the URL start.sh printed at first boot
        webhook = f"{url}/webhook/chatwoot/default?token={token}"
        kept = requests.post(webhook, json=cw.message("still there?", 83), timeout=5)
        assert kept.status_code == 202 and kept.json()["spooled"] is True

        embedded = redis.Redis(port=redis_port, password=password, decode_responses=True)
        for chunk in range(0, 100_000, 1000):  # an operator made room
            embedded.delete(*(f"{FILLER}{n}" for n in range(chunk, chunk + 1000)))
        wait_for(lambda: embedded.llen("default:webhook_outbox"), timeout=30)
        wait_for(lambda: _ready(url), timeout=20)
        assert [json.loads(e)["content"] for e in embedded.lrange("default:webhook_outbox", 0, -1)] == [
            "still there?"
        ]
    finally:
        _stop(proc, log)


def _answer(url: str) -> tuple[int, dict] | None:
    """(status, JSON body) once the port answers (a 503 too), else None."""
    try:
        response = requests.get(url, timeout=2)
        return response.status_code, response.json()
    except (requests.RequestException, ValueError):
        return None
