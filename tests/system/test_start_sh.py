"""Boot start.sh as the container does and talk to it over HTTP."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
import requests

from tests import chatwoot_payloads as cw
from tests.conftest import SECRET, signed_headers
from tests.support import BIN, ROOT, Stand, free_port, wait_for
from tests.support import boot_start_sh as _boot

pytestmark = pytest.mark.slow


def _processes() -> list[tuple[int, int, int, str]]:
    out = subprocess.run(
        ["ps", "-ww", "-e", "-o", "pid=,ppid=,pgid=,stat=,args="], capture_output=True, text=True
    ).stdout
    rows = []
    for line in out.splitlines():
        pid, ppid, pgid, stat, *args = line.split(None, 4)
        if not stat.startswith("Z"):  # a zombie has exited and waits for its reaper (tini)
            rows.append((int(pid), int(ppid), int(pgid), " ".join(args)))
    return rows


def _groups(root: int) -> set[int]:
    """Process groups of start.sh and all its descendants."""
    rows = _processes()
    tree, groups = {root}, {root}
    for _ in range(5):
        for pid, ppid, pgid, _args in rows:
            if ppid in tree:
                tree.add(pid)
                groups.add(pgid)
    return groups


def _alive(groups: set[int]) -> list[str]:
    return [f"{pid} {args}" for pid, _ppid, pgid, args in _processes() if pgid in groups]


def _cleanup(groups: set[int]) -> list[str]:
    time.sleep(0.5)
    leftovers = _alive(groups)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/readyz", timeout=1).status_code == 200
    except requests.RequestException:  # refused, or the proxy still waiting for gunicorn
        return False


def _stop(proc: subprocess.Popen, log: Path) -> None:
    groups = _groups(proc.pid)
    try:
        assert len(groups) >= 3, log.read_text()[-3000:]  # start.sh, the worker, gunicorn (and redis)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0, log.read_text()[-3000:]
    finally:
        leftovers = _cleanup(groups)
        assert leftovers == [], f"children still running after SIGTERM: {leftovers}"


def _container_env(redis_url: str, stand: Stand, tmp_path: Path, **extra: str) -> tuple[dict[str, str], int]:
    """start.sh's environment against the suite's Redis and the local Chatwoot; and its port."""
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),  # gunicorn, behind the proxy
        "DATA_DIR": str(tmp_path / "data"),
        "CHATWOOT_BASE_URL": stand.url,
        "CHATWOOT_API_TOKEN": "cw-token",
        "CHATWOOT_WEBHOOK_SECRET": SECRET,
        "BATCH_WINDOW_SECONDS": "0.3",
        "BATCH_MAX_WAIT_SECONDS": "1",
        **extra,
    }
    return env, port


def test_start_sh_serves_a_webhook_to_a_reply_and_stops_every_child(redis_url, rdb, stand: Stand, tmp_path):
    stand.reset()
    env, port = _container_env(
        redis_url,
        stand,
        tmp_path,
        BATCH_WINDOW_SECONDS="0.5",
        BATCH_MAX_WAIT_SECONDS="2",
        WEB_CONCURRENCY="2",
        LOG_FORMAT="json",
    )
    log = tmp_path / "start.log"
    proc = _boot(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url) or proc.poll() is not None, timeout=40)
        assert proc.poll() is None, log.read_text()
        mine = _groups(proc.pid)
        workers = [args for _, _, pgid, args in _processes() if pgid in mine and "app.worker worker" in args]
        assert workers and all(
            "--pool=threads --concurrency=64 --prefetch-multiplier=4" in a for a in workers
        )
        for text in ("hello", "from start.sh"):
            body = json.dumps(cw.message(text, 80)).encode()
            response = requests.post(
                f"{url}/webhook/chatwoot/default", data=body, headers=signed_headers(body), timeout=5
            )
            assert response.status_code == 202, response.text
        wait_for(lambda: stand.replies(80), timeout=15)
        time.sleep(0.7)
        assert stand.replies(80) == ["hello from start.sh"]
        for _ in range(4):  # several scrapes: gunicorn's two workers answer in turn
            metrics = requests.get(f"{url}/metrics", timeout=5).text
            assert 'gateway_webhook_responses_total{status="202"} 2.0' in metrics  # summed over workers
            assert 'gateway_replies_sent_total{company="default"} 1.0' in metrics
    finally:
        _stop(proc, log)
    assert "a child exited" not in log.read_text()
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"time"')]
    queued = [e for e in events if e["message"].startswith("message queued")]  # web (gunicorn) logs too
    answered = [e for e in events if e["message"].startswith("batch answered")]  # and the worker's
    assert queued and queued[0]["company"] == "default" and queued[0]["conversation"] == "80"
    assert answered and answered[0]["task"]


def test_the_default_container_answers_conversations_at_once_each_in_order_and_once(
    redis_url, rdb, stand: Stand, tmp_path
):
    """With the container's defaults and a slow bot, conversations do not wait on each other
    (invariant 13): their bot calls overlap, while each conversation is still drained by one
    run at a time, in FIFO order, and every message is answered once."""
    stand.reset()
    stand.bot_delay = 1.5  # a fast LLM
    env, port = _container_env(redis_url, stand, tmp_path, BOT_BACKEND="http", BOT_URL=f"{stand.url}/bot")
    log = tmp_path / "start.log"
    proc = _boot(env, log)
    url = f"http://127.0.0.1:{port}"
    sent = {c: [f"c{c} question {i} " + "w" * 420 for i in range(3)] for c in (91, 92, 93)}  # long:
    try:  # one bot call per message, so a conversation's order shows in its replies
        wait_for(lambda: _ready(url) or proc.poll() is not None, timeout=40)
        assert proc.poll() is None, log.read_text()
        for i in range(3):
            for conversation, texts in sent.items():
                body = json.dumps(cw.message(texts[i], conversation)).encode()
                response = requests.post(
                    f"{url}/webhook/chatwoot/default", data=body, headers=signed_headers(body), timeout=5
                )
                assert response.status_code == 202, response.text
        wait_for(lambda: all(len(stand.replies(c)) >= 3 for c in sent), timeout=30)
        time.sleep(0.5)
    finally:
        _stop(proc, log)
    for conversation, texts in sent.items():
        assert stand.replies(conversation) == texts  # in order, each once
        assert stand.max_in_flight[str(conversation)] == 1  # one run at a time per conversation
    spans = stand.bot_spans
    overlapping = max(sum(1 for _, s, e in spans if s <= start < e) for _, start, _ in spans)
    assert overlapping >= 2, spans  # several conversations' bot calls at once


def _kill_child_and_expect_the_container_to_stop(
    env: dict[str, str], port: int, log: Path, child: str, said: str
) -> None:
    """Boot start.sh, SIGKILL its child whose command line holds ``child``: start.sh must
    stop the others and exit non-zero (so the platform restarts it), saying ``said``."""
    proc = _boot(env, log)
    groups: set[int] = set()
    try:
        wait_for(lambda: _ready(f"http://127.0.0.1:{port}") or proc.poll() is not None, timeout=40)
        assert proc.poll() is None, log.read_text()
        groups = _groups(proc.pid)
        victim = next(pid for pid, _pp, pgid, args in _processes() if pid == pgid in groups and child in args)
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=40) != 0
        assert said in log.read_text()
    finally:
        leftovers = _cleanup(groups)
        assert leftovers == [], f"left running after {child} died: {leftovers}"


def test_start_sh_exits_when_a_child_dies(redis_url, rdb, tmp_path):
    port = free_port()
    env = {
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),  # gunicorn, behind the proxy
        "DATA_DIR": str(tmp_path / "data"),
        "WEBHOOK_TOKEN": "t",
    }
    _kill_child_and_expect_the_container_to_stop(
        env, port, tmp_path / "start.log", "app.worker worker", "a child exited"
    )


def test_start_sh_exits_when_the_embedded_redis_dies(tmp_path):
    """Without its Redis nothing is durable: the container must stop so the platform
    restarts it, not answer 500 forever."""
    port, redis_port = free_port(), free_port()
    env = {
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),
        "DATA_DIR": str(tmp_path / "data"),
        "EMBEDDED_REDIS_PORT": str(redis_port),
    }
    _kill_child_and_expect_the_container_to_stop(
        env, port, tmp_path / "start.log", "redis-server", "the embedded redis-server exited"
    )


def test_embedded_redis_default_prints_a_ready_url_and_keeps_replies(tmp_path):
    port, redis_port = free_port(), free_port()
    data = tmp_path / "data"
    env = {
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),  # gunicorn, behind the proxy
        "DATA_DIR": str(data),
        "EMBEDDED_REDIS_PORT": str(redis_port),
        "BATCH_WINDOW_SECONDS": "0.5",
        "BATCH_MAX_WAIT_SECONDS": "2",
        "HOME": "/proc",  # a HOME nobody may write, as the image's user had (/root)
    }
    log = tmp_path / "start.log"
    proc = _boot(env, log)
    try:
        wait_for(lambda: _ready(f"http://127.0.0.1:{port}") or proc.poll() is not None, timeout=40)
        text = log.read_text()
        assert "embedded redis-server" in text and "append-only" in text
        match = re.search(r"(http://localhost:\d+/webhook/chatwoot/default\?token=\S+)", text)
        assert match, text
        webhook = match.group(1).replace("localhost", "127.0.0.1")
        response = requests.post(webhook, json=cw.message("hi newcomer", 81), timeout=5)
        assert response.status_code == 202, response.text
        password = (data / "redis" / "password").read_text().strip()
        with pytest.raises(redis.AuthenticationError):  # not without its password
            redis.Redis(port=redis_port).ping()
        embedded = redis.Redis(port=redis_port, password=password, decode_responses=True)
        # a ceiling, refusing writes past it (review 2026-12-03, finding 4), never evicting queues
        assert embedded.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(embedded.config_get("maxmemory")["maxmemory"]) > 0
        wait_for(lambda: embedded.llen("default:webhook_outbox"), timeout=15)
        kept = json.loads(embedded.lindex("default:webhook_outbox", 0))
        assert kept["content"] == "hi newcomer" and kept["conversation_id"] == "81"
    finally:
        _stop(proc, log)
    token = match.group(1).rsplit("=", 1)[1]
    after_banner = log.read_text().split(match.group(1), 1)[1]
    assert '"POST /webhook/chatwoot/default" 202' in after_banner
    assert token not in after_banner, "the webhook token leaked into the logs"
    assert "hi newcomer" not in after_banner, "a message body was logged at INFO"
    assert list((data / "redis").rglob("*.aof*")), "append-only persistence enabled"
    assert password not in log.read_text()  # nor on any command line (checked in the flower test's way)
    assert "Control server error" not in log.read_text()  # gunicorn's control socket is off


def test_container_sigkill_without_draining_then_restart_loses_nothing(
    redis_url, rdb, stand: Stand, tmp_path
):
    """A redeploy that did not wait: every process SIGKILLed at once, then a new container."""
    from tests.system.test_faults import tally

    stand.reset()
    stand.bot_delay = 0.25  # 24 answers take ~6 s: the kill lands in the middle
    stand.bot_answer = lambda body: {"replies": [m["content"] for m in body["messages"]]}
    env, port = _container_env(
        redis_url,
        stand,
        tmp_path,
        LEASE_TTL_SECONDS="2",
        SWEEP_INTERVAL_SECONDS="0.5",
        BOT_BACKEND="http",
        BOT_URL=f"{stand.url}/bot",
    )
    url = f"http://127.0.0.1:{port}"
    sent: dict[int, list[str]] = {c: [] for c in range(150, 154)}
    acknowledged = 0

    def send(conv: int, i: int) -> None:
        nonlocal acknowledged
        text = f"c{conv} m{i:02d} " + "k" * 420
        body = json.dumps(cw.message(text, conv)).encode()
        response = requests.post(
            f"{url}/webhook/chatwoot/default", data=body, headers=signed_headers(body), timeout=5
        )
        if response.status_code == 202:
            sent[conv].append(text)
            acknowledged += 1

    first = _boot(env, tmp_path / "first.log")
    try:
        wait_for(lambda: _ready(url), timeout=40)
    except BaseException:
        _cleanup(_groups(first.pid))  # leave no container behind a failed boot
        raise
    groups = _groups(first.pid)
    for i in range(6):
        for conv in sent:
            send(conv, i)
    time.sleep(1.5)  # some batches answered, one in flight, the rest waiting
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    first.wait(timeout=10)
    answered_before = len(stand.replies())
    assert 0 < answered_before < acknowledged  # the kill landed mid-stream
    second = _boot(env, tmp_path / "second.log")
    try:
        wait_for(lambda: _ready(url), timeout=40)
        for conv in sent:
            send(conv, 6)
        wait_for(lambda: all(set(stand.replies(c)) >= set(sent[c]) for c in sent), timeout=60)
        time.sleep(1)
    finally:
        _stop(second, tmp_path / "second.log")
    figures = tally(
        sent,
        stand,
        acknowledged,
        fault="container SIGKILL without draining, then restart",
        answered_before_kill=answered_before,
    )
    assert figures["lost"] == 0 and figures["reordered_conversations"] == 0
    assert figures["duplicated"] <= 1  # one crash: at most the one reply in flight


def test_flower_behind_basic_auth_on_the_public_port(redis_url, rdb, stand: Stand, tmp_path):
    stand.reset()
    env, port = _container_env(
        redis_url,
        stand,
        tmp_path,
        FLOWER_BASIC_AUTH="ops:fl0wer-pass",
        FLOWER_PORT=str(free_port()),
    )
    log = tmp_path / "start.log"
    proc = _boot(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url) or proc.poll() is not None, timeout=40)
        assert proc.poll() is None, log.read_text()[-3000:]
        wait_for(lambda: _status(f"{url}/flower/", ("ops", "fl0wer-pass")) == 200, timeout=30)
        for path in ("/flower/", "/flower/metrics", "/flower/api/workers", "/flower/dashboard"):
            assert _status(url + path) == 401, path  # anonymous: refused, Flower's /metrics included
            assert _status(url + path, ("ops", "wrong")) == 401, path
        assert _status(f"{url}/flower/metrics", ("ops", "fl0wer-pass")) == 200
        page = requests.get(f"{url}/flower/", auth=("ops", "fl0wer-pass"), timeout=5).text
        assert "Flower" in page
        body = json.dumps(cw.message("through the front", 85)).encode()
        response = requests.post(
            f"{url}/webhook/chatwoot/default", data=body, headers=signed_headers(body), timeout=5
        )
        assert response.status_code == 202
        wait_for(lambda: stand.replies(85), timeout=15)
        ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
        assert "fl0wer-pass" not in ps  # the password is on no command line
        # The proxy holds a digest of the Authorization header, not the password: a guess
        # costs it a SHA-256, never a slow hash in its one event loop.
        mine = _groups(proc.pid)
        proxy = next(
            pid for pid, _pp, pgid, args in _processes() if pgid in mine and args.startswith("haproxy ")
        )
        environ = dict(
            item.split("=", 1)
            for item in Path(f"/proc/{proxy}/environ").read_text().split("\0")
            if "=" in item
        )
        expected = "Basic " + base64.b64encode(b"ops:fl0wer-pass").decode()
        assert environ["FLOWER_AUTH_DIGEST"] == hashlib.sha256(expected.encode()).hexdigest().upper()
        # The internet-facing process holds no secret (review 2026-12-03, finding 12):
        # only what its configuration reads.
        assert set(environ) <= {
            "PATH",
            "PORT",
            "WEB_INTERNAL_PORT",
            "PROXY_BUFSIZE",
            "PROXY_MAXCONN",
            "FLOWER_PORT",
            "FLOWER_AUTH_DIGEST",
        }, sorted(environ)
        secrets_held = "\0".join(environ.values())
        for secret in (
            "fl0wer-pass",
            env["REDIS_URL"],
            env["CHATWOOT_WEBHOOK_SECRET"],
            env["CHATWOOT_API_TOKEN"],
        ):
            assert secret not in secrets_held
    finally:
        _stop(proc, log)


def _status(url: str, auth: tuple[str, str] | None = None) -> int:
    try:
        return requests.get(url, auth=auth, timeout=5, allow_redirects=False).status_code
    except requests.ConnectionError:
        return 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CELERY_PREFETCH_MULTIPLIER", "0"),
        ("CELERY_CONCURRENCY", "many"),
        ("WEB_CONCURRENCY", "-1"),
        ("WEB_THREADS", "4x"),
    ],
)
def test_start_sh_refuses_a_bad_process_count_naming_it(redis_url, stand: Stand, tmp_path, name, value):
    env, _ = _container_env(redis_url, stand, tmp_path, **{name: value})
    proc = _boot(env, tmp_path / "bad.log")
    assert proc.wait(timeout=20) == 2
    assert f"{name} must be a positive whole number, got '{value}'" in (tmp_path / "bad.log").read_text()


@pytest.mark.parametrize(
    ("missing", "hint"),
    [
        ("haproxy", "apt-get install haproxy"),
        ("gunicorn", "requirements are not installed"),
        ("redis-server", "REDIS_URL"),
    ],
)
def test_start_sh_names_a_missing_program_and_how_to_get_it(redis_url, stand: Stand, tmp_path, missing, hint):
    """Was: ``setsid: failed to execute caddy``, exit 127, after the worker had started."""
    env, _ = _container_env(redis_url, stand, tmp_path)
    if missing == "redis-server":
        env.pop("REDIS_URL")  # the embedded one is wanted
    bin_dir = tmp_path / "bin"  # PATH without the one program
    bin_dir.mkdir()
    for folder in f"{BIN}:{os.environ['PATH']}".split(":"):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else []:
            link = bin_dir / program.name
            if program.name != missing and not link.exists() and os.access(program, os.X_OK):
                link.symlink_to(program)
    env["PATH"] = str(bin_dir)
    proc = _boot(env, tmp_path / "missing.log")
    assert proc.wait(timeout=20) == 2
    text = (tmp_path / "missing.log").read_text()
    assert f"{missing} not found on PATH" in text and hint in text, text


def test_the_printed_webhook_url_is_the_public_one(redis_url, stand: Stand, tmp_path):
    """A container published on another port, or behind Railway's domain: the URL printed
    on the first boot is the one Chatwoot reaches."""
    env, port = _container_env(redis_url, stand, tmp_path)
    env.pop("REDIS_URL")
    for name in ("CHATWOOT_WEBHOOK_SECRET", "WEBHOOK_TOKEN"):
        env.pop(name, None)
    env.update(EMBEDDED_REDIS_PORT=str(free_port()), RAILWAY_PUBLIC_DOMAIN="gw.up.railway.app")
    log = tmp_path / "start.log"
    proc = _boot(env, log)
    try:
        wait_for(lambda: "point Chatwoot at" in log.read_text() or proc.poll() is not None, timeout=40)
        assert (
            "point Chatwoot at https://gw.up.railway.app/webhook/chatwoot/default?token=" in log.read_text()
        )
        wait_for(lambda: _ready(f"http://127.0.0.1:{port}") or proc.poll() is not None, timeout=40)
    finally:
        _stop(proc, log)
    bad = {**env, "PUBLIC_URL": "gw.example.com/path"}
    proc = _boot(bad, tmp_path / "bad.log")
    assert proc.wait(timeout=20) == 2 and "PUBLIC_URL must be" in (tmp_path / "bad.log").read_text()


def _slow_client(port: int) -> socket.socket:
    """A connection that has sent part of a request's headers and then stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"POST /webhook/chatwoot/default HTTP/1.1\r\nHost: x\r\n")
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        return sock.recv(1024) == b"" or True  # any answer (a 408) or EOF: the server let go
    except TimeoutError:
        return False
    except OSError:
        return True


def test_slow_clients_cannot_starve_the_web_and_a_boot_has_no_502(redis_url, rdb, stand: Stand, tmp_path):
    """Thirty connections that trickle their headers (no credentials needed) would hold
    gunicorn's workers; the proxy holds them instead, and drops them once its
    request timeout (10 s) passes. From its first answer on, the public port never
    answers 502 or 503. gunicorn keeps a connection alive (its threaded workers), so
    the proxy reuses one rather than opening one per request."""
    stand.reset()
    env, port = _container_env(redis_url, stand, tmp_path, WEB_CONCURRENCY="2")
    log = tmp_path / "start.log"
    url = f"http://127.0.0.1:{port}"
    proc = _boot(env, log)
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                statuses.append(requests.get(url + "/healthz", timeout=2).status_code)
            except requests.ConnectionError:
                pass  # not listening yet
            if statuses and statuses[-1] == 200 and _ready(url):
                break
            time.sleep(0.02)
        assert proc.poll() is None and _ready(url), log.read_text()[-3000:]
        assert 502 not in statuses and 503 not in statuses, statuses
        internal = http.client.HTTPConnection("127.0.0.1", int(env["WEB_INTERNAL_PORT"]), timeout=2)
        try:  # the internal port, as HAProxy reaches it: two requests on one connection
            socks = []
            for _ in range(2):
                internal.request("GET", "/healthz")
                assert internal.getresponse().read() and internal.sock is not None  # not closed
                socks.append(internal.sock)
            assert socks[0] is socks[1]
        finally:
            internal.close()
        opened = time.monotonic()
        slow = [_slow_client(port) for _ in range(30)]
        time.sleep(1.0)
        for sock in slow[:10]:
            sock.sendall(b"X-Trickle: 1\r\n")  # still sending, a line now and then
        started = time.monotonic()
        assert requests.get(url + "/healthz", timeout=3).status_code == 200
        body = json.dumps(cw.message("heard through the crowd", 86)).encode()
        answer = requests.post(
            f"{url}/webhook/chatwoot/default", data=body, headers=signed_headers(body), timeout=3
        )
        assert answer.status_code == 202, answer.text
        assert time.monotonic() - started < 2.0
        wait_for(lambda: stand.replies(86), timeout=15)
        time.sleep(max(0.0, opened + 11.5 - time.monotonic()))  # timeout http-request is 10 s
        assert all(_closed_by_server(sock) for sock in slow)
        for sock in slow:
            sock.close()
    finally:
        _stop(proc, log)


def test_the_webhook_token_url_is_printed_once_and_data_is_private(tmp_path):
    """The generated token's URL goes to the log when it is made, not on every boot; what
    DATA_DIR holds (the token, Redis's append-only files) is readable by its owner only."""
    data = tmp_path / "data"
    for boot in range(2):
        port = free_port()
        env = {
            "PORT": str(port),
            "WEB_INTERNAL_PORT": str(free_port()),
            "DATA_DIR": str(data),
            "EMBEDDED_REDIS_PORT": str(free_port()),
        }
        log = tmp_path / f"boot{boot}.log"
        proc = _boot(env, log)
        try:
            up = f"http://127.0.0.1:{port}"
            wait_for(lambda up=up, proc=proc: _ready(up) or proc.poll() is not None, timeout=40)
            assert proc.poll() is None, log.read_text()[-3000:]
        finally:
            _stop(proc, log)
    token = (data / "webhook_token").read_text().strip()
    assert token in (tmp_path / "boot0.log").read_text()
    second = (tmp_path / "boot1.log").read_text()
    assert token not in second and str(data / "webhook_token") in second
    private = [data / "webhook_token", *(data / "redis").rglob("*.aof*")]
    assert len(private) > 1
    for path in private:
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))


def _logged(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A process of the container run alone from the repository, its output in ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_the_proxy_logs_no_token_when_its_upstream_is_down(tmp_path):
    """The proxy logs a request it could not pass on (a 503) with its path only: no
    ?token= value, X-Webhook-Token or Authorization."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PORT": str(port),
        "WEB_INTERNAL_PORT": str(free_port()),  # nothing listens there
        "PROXY_BUFSIZE": "1064960",
        "PROXY_MAXCONN": "252",
    }
    log = tmp_path / "proxy.log"
    proxy = _logged(["haproxy", "-db", "-f", "deploy/haproxy.cfg"], env, log)
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/healthz") == 503, timeout=20)
        headers = {"X-Webhook-Token": "header-secret-1", "Authorization": "Bearer metrics-secret-2"}
        answer = requests.post(
            f"http://127.0.0.1:{port}/webhook/chatwoot/default?token=query-secret-3&x=1",
            data=b"{}",
            headers=headers,
            timeout=5,
        )
        assert answer.status_code == 503
        time.sleep(0.5)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    text = log.read_text()
    assert '"POST /webhook/chatwoot/default" 503' in text, text  # the request was logged, its path only
    for secret in ("header-secret-1", "metrics-secret-2", "query-secret-3"):
        assert secret not in text


def test_gunicorn_logs_a_failed_request_without_its_token(tmp_path):
    """gunicorn prints the request URI when a request fails (or its worker times out):
    deploy/gunicorn.conf.py masks the ?token= in it."""
    (tmp_path / "raising.py").write_text(
        "def app(environ, start_response):\n    raise RuntimeError('boom')\n"
    )
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    config = ["--config", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    web = _logged([str(BIN / "gunicorn"), "raising:app", *config], env, log)
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/x?token=query-secret-4") == 500, timeout=20)
        time.sleep(0.3)
    finally:
        web.terminate()
        web.wait(timeout=10)
    text = log.read_text()
    assert "Error handling request GET /x?token=REDACTED" in text, text[-2000:]
    assert "query-secret-4" not in text


@pytest.mark.skipif(os.geteuid() != 0, reason="the entrypoint's root path needs root")
def test_the_entrypoint_hands_a_root_owned_volume_to_the_user_and_drops_root(tmp_path):
    """A platform volume mounted root-owned: the image's entrypoint gives DATA_DIR to the
    unprivileged user and runs start.sh as that user, never as root."""
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # traversable by the unprivileged user
    os.chmod(base, 0o755)
    try:
        app, data = base / "app", base / "volume"
        app.mkdir()
        data.mkdir()
        (data / "left-by-root").write_text("x")  # what an earlier root-run container left
        fake = app / "start.sh"  # stands in for start.sh: says who runs it, writes to DATA_DIR
        fake.write_text('#!/bin/sh\nid -u > "$DATA_DIR/uid"\necho "$@" > "$DATA_DIR/args"\n')
        fake.chmod(0o755)
        env = {**os.environ, "DATA_DIR": str(data), "GATEWAY_USER": "nobody"}
        done = subprocess.run(
            [str(ROOT / "deploy" / "entrypoint.sh"), "--flag"],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
        assert int((data / "uid").read_text()) == nobody and (data / "args").read_text().strip() == "--flag"
        assert data.stat().st_uid == nobody and (data / "left-by-root").stat().st_uid == nobody
        assert data.stat().st_mode & 0o077 == 0
    finally:
        shutil.rmtree(base)


def test_the_proxy_passes_a_body_up_to_the_limit_and_the_app_refuses_a_larger_one(
    redis_url, stand: Stand, tmp_path
):
    """The proxy's buffer is sized from MAX_BODY_BYTES: a body at the limit reaches the app
    whole; a larger one is passed on and gets the app's 413 naming the limit."""
    stand.reset()
    env, port = _container_env(redis_url, stand, tmp_path, MAX_BODY_BYTES="200000")
    log = tmp_path / "start.log"
    proc = _boot(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url) or proc.poll() is not None, timeout=40)
        near = cw.message("x" * 100, 87)
        near["padding"] = "p" * (199_000 - len(json.dumps(near)))
        body = json.dumps(near).encode()
        answer = requests.post(
            f"{url}/webhook/chatwoot/default", data=body, headers=signed_headers(body), timeout=10
        )
        assert answer.status_code == 202, answer.text
        big = json.dumps({**near, "padding": "p" * 300_000}).encode()
        refused = requests.post(
            f"{url}/webhook/chatwoot/default", data=big, headers=signed_headers(big), timeout=10
        )
        assert refused.status_code == 413 and "200000" in refused.json()["reason"], refused.text
    finally:
        _stop(proc, log)
