"""A voice note's ``data_url`` comes from a webhook: whoever can post one chooses it
(security review 2026-12-03, findings 1-3). The fetch goes only to Chatwoot's origin,
``MEDIA_ALLOWED_HOSTS``, or a host at a public address (checked on the address
connected, on every redirect hop); one wall-clock deadline bounds the fetch and the
transcription whatever the servers trickle; a batch's notes have a budget and each
transcript is kept in the ledger, so a batch run again never pays for a note twice.

Every server here is a loopback stand-in: the "internal service" is one more loopback
port that is not Chatwoot's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import redis

from app.bots.media import is_public
from app.bots.transcribe import Budget, Transcriber, with_transcripts
from app.chatwoot.messages import Attachment, StoredMessage
from app.errors import TranscriptionError
from app.settings import load_settings
from app.store import keys
from tests import chatwoot_payloads as cw
from tests.conftest import base_env, make_client, post_webhook
from tests.support import Listener, Stand, Worker, wait_for


class Server:
    """A loopback HTTP server whose answer to each GET is ``route(path)``: (status,
    headers, body, seconds between body bytes, seconds between header bytes)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.route: Any = lambda path: (200, {}, b"", 0.0, 0.0)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                status, headers, body, body_gap, head_gap = server.route(self.path)
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                try:
                    for byte in head.encode() if head_gap else [head.encode()]:
                        self.wfile.write(bytes([byte]) if head_gap else byte)
                        self.wfile.flush()
                        time.sleep(head_gap)
                    for i in range(len(body)) if body_gap else [None]:
                        self.wfile.write(body[i : i + 1] if i is not None else body)
                        self.wfile.flush()
                        time.sleep(body_gap)
                except OSError:
                    pass  # the client gave up: what the deadline is for

            def do_POST(self) -> None:  # the transcription provider: the "audio" is the text
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                server.requests.append(f"POST {self.path}")
                part = raw.split(b'name="file"', 1)[-1]  # the multipart's file part
                said = part.split(b"\r\n\r\n", 1)[-1].split(b"\r\n--", 1)[0]
                body = b'{"text": "' + said + b'"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = Listener(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    """(Chatwoot, an internal service): two loopback ports."""
    chatwoot, internal = Server(), Server()
    internal.route = lambda path: (200, {}, b"internal secret", 0.0, 0.0)
    yield chatwoot, internal
    chatwoot.close()
    internal.close()


def transcriber(chatwoot: Server, **env: str) -> Transcriber:
    settings = load_settings(
        {
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "CHATWOOT_BASE_URL": chatwoot.url,
            "CHATWOOT_API_TOKEN": "t",
            "BOT_BACKEND": "echo",
            "TRANSCRIBE_BACKEND": "openai",
            "TRANSCRIBE_BASE_URL": f"{chatwoot.url}/v1",
            "TRANSCRIBE_TIMEOUT_SECONDS": "2",
            **env,
        }
    )
    return Transcriber(settings.companies["default"])


def test_public_addresses_only() -> None:
    for inside in (
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "not an address",
    ):
        assert not is_public(inside), inside
    for outside in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert is_public(outside), outside


def test_chatwoots_media_is_fetched_through_its_redirect_to_its_own_storage(servers) -> None:
    chatwoot, _ = servers
    chatwoot.route = lambda path: (
        (302, {"Location": "/media/note.ogg"}, b"", 0.0, 0.0)
        if path.startswith("/rails/")
        else (200, {"Content-Type": "audio/ogg"}, b"see you at noon", 0.0, 0.0)
    )
    text = transcriber(chatwoot).transcribe(f"{chatwoot.url}/rails/active_storage/blobs/note.ogg")
    assert text == "see you at noon"


def test_a_redirect_to_an_internal_service_is_refused(servers) -> None:
    """Finding 1: Chatwoot's address (or any) answering 302 to a loopback service that is
    not Chatwoot's: the hop is refused on the address it connected to, nothing is asked
    of the internal service, and nothing reaches the transcription provider."""
    chatwoot, internal = servers
    chatwoot.route = lambda path: (302, {"Location": f"{internal.url}/latest/meta-data/"}, b"", 0.0, 0.0)
    with pytest.raises(TranscriptionError, match=r"127\.0\.0\.1 is at 127\.0\.0\.1, not public"):
        transcriber(chatwoot).transcribe(f"{chatwoot.url}/rails/active_storage/blobs/x.ogg")
    assert internal.requests == []
    assert not [r for r in chatwoot.requests if r.startswith("POST")]


def test_a_name_resolving_inside_is_refused_on_the_address_connected(servers) -> None:
    """``localhost`` is not Chatwoot's host: what it resolves to is checked when connected
    (a name cannot rebind its way in between a check and the connection)."""
    chatwoot, internal = servers
    with pytest.raises(TranscriptionError, match="not public"):
        transcriber(chatwoot).transcribe(f"http://localhost:{internal.port}/note.ogg")
    assert internal.requests == []


def test_media_allowed_hosts_is_the_only_way_out(servers) -> None:
    """MEDIA_ALLOWED_HOSTS set: those hosts (and Chatwoot's origin) at any address, nothing
    else, not even a public one; a listed storage on a private network is fetched."""
    chatwoot, internal = servers
    storage = Server()
    try:
        storage.route = lambda path: (200, {}, b"from the storage", 0.0, 0.0)
        allowed = transcriber(chatwoot, MEDIA_ALLOWED_HOSTS=f"127.0.0.1:{storage.port}, cdn.example.com")
        assert allowed.transcribe(f"{storage.url}/note.ogg") == "from the storage"
        chatwoot.route = lambda path: (302, {"Location": f"{internal.url}/admin"}, b"", 0.0, 0.0)
        with pytest.raises(TranscriptionError, match="not in MEDIA_ALLOWED_HOSTS"):
            allowed.transcribe(f"{chatwoot.url}/rails/x.ogg")
        with pytest.raises(TranscriptionError, match="not in MEDIA_ALLOWED_HOSTS"):
            allowed.transcribe("http://93.184.215.14/note.ogg")  # never connected: refused before
        assert internal.requests == []
    finally:
        storage.close()


def test_redirects_are_followed_at_most_three_times(servers) -> None:
    chatwoot, _ = servers
    chatwoot.route = lambda path: (302, {"Location": f"/hop{len(chatwoot.requests)}"}, b"", 0.0, 0.0)
    with pytest.raises(TranscriptionError, match="redirected more than 3 times"):
        transcriber(chatwoot).transcribe(f"{chatwoot.url}/rails/x.ogg")
    assert len(chatwoot.requests) == 4


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_server_is_cut_at_the_deadline(servers, where: str) -> None:
    """Finding 2: headers, then a byte every 0.2 s (requests' read timeout never fires), or
    the headers themselves a byte at a time: TRANSCRIBE_TIMEOUT_SECONDS=2 is a deadline."""
    chatwoot, _ = servers
    body, gaps = b"x" * 200, (0.2, 0.0) if where == "body" else (0.0, 0.2)
    chatwoot.route = lambda path: (200, {"Content-Type": "audio/ogg"}, body, *gaps)
    started = time.monotonic()
    with pytest.raises(TranscriptionError, match="took over 2 s"):
        transcriber(chatwoot).transcribe(f"{chatwoot.url}/rails/slow.ogg")
    assert time.monotonic() - started < 2.5


def test_the_deadline_is_the_batchs_budget_when_it_is_shorter(servers) -> None:
    chatwoot, _ = servers
    chatwoot.route = lambda path: (200, {}, b"x" * 100, 0.2, 0.0)
    started = time.monotonic()
    with pytest.raises(TranscriptionError, match=r"took over 0\.6 s"):
        transcriber(chatwoot).transcribe(f"{chatwoot.url}/rails/slow.ogg", 0.6)
    assert time.monotonic() - started < 1.0


def _notes(count: int) -> list[StoredMessage]:
    return [
        StoredMessage(
            id=500 + n,
            conversation_id="9",
            account_id=1,
            content="",
            received_at=0.0,
            attachments=(Attachment("audio", f"https://media.example/{n}.ogg"),),
        )
        for n in range(count)
    ]


def test_a_batch_transcribes_at_most_its_budget_and_never_a_note_twice() -> None:
    """Finding 3: twelve notes, TRANSCRIBE_MAX_NOTES=10: ten are transcribed, two go to the
    bot without text; run again, the batch uses the kept transcripts (no new call)."""
    asked: list[str] = []
    kept: dict[tuple[int, int], str] = {}
    failures: list[str] = []

    def transcribe(url: str, seconds: float) -> str:
        asked.append(url)
        assert 0 < seconds <= 60
        if url.endswith("/3.ogg"):
            raise TranscriptionError("fetching the voice note answered 500")
        return f"said {url[-5]}"

    def run() -> list[StoredMessage]:
        return with_transcripts(
            _notes(12),
            transcribe,
            Budget(10, time.monotonic() + 60),
            lambda m, i: kept.get((m, i)),
            lambda m, i, value: kept.__setitem__((m, i), value),
            failures.append,
        )

    first = run()
    texts = [m.attachments[0].transcribed_text for m in first]
    assert len(asked) == 10 and texts[:3] == ["said 0", "said 1", "said 2"]
    assert texts[3] is None and texts[10:] == [None, None]
    assert kept[(503, 0)].startswith("failed:") and kept[(511, 0)].startswith("failed:over the batch")
    assert len(kept) == 12 and len(failures) == 3 and "budget" in failures[-1]
    again = run()
    assert len(asked) == 10  # nothing fetched twice, nor the notes the budget did not reach
    assert [m.attachments[0].transcribed_text for m in again] == texts


def test_the_budget_is_seconds_too() -> None:
    budget = Budget(10, time.monotonic() + 0.3)
    assert budget.take() is None  # less than half a second left: not worth starting a note
    budget = Budget(2, time.monotonic() + 5)
    assert budget.take() and budget.take() and budget.take() is None


def test_run_max_seconds_covers_the_transcription_budget() -> None:
    env = {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "BOT_BACKEND": "echo",
        "BOT_TIMEOUT_SECONDS": "30",
        "RUN_MAX_SECONDS": "100",
        "TRANSCRIBE_BACKEND": "openai",
        "OPENAI_BASE_URL": "https://api.example.com/v1",
    }
    with pytest.raises(ValueError, match="TRANSCRIBE_BUDGET_SECONDS"):
        load_settings(env)
    assert load_settings({**env, "TRANSCRIBE_BUDGET_SECONDS": "30"}).run_max_seconds == 100
    with pytest.raises(ValueError, match=r"MEDIA_ALLOWED_HOSTS.*not a host name"):
        load_settings({**env, "RUN_MAX_SECONDS": "300", "MEDIA_ALLOWED_HOSTS": "https://cdn.example.com/x"})


# -- through the real pipeline -----------------------------------------------------------


def _voice_env(redis_url: str, stand: Stand, tmp_path, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return base_env(
        redis_url,
        stand.url,
        TEST_LOG_DIR=str(tmp_path),
        TRANSCRIBE_BACKEND="openai",
        TRANSCRIBE_BASE_URL=f"{stand.url}/v1",
        **extra,
    )


@pytest.mark.slow
def test_a_trickling_voice_note_holds_a_solo_worker_no_longer_than_its_deadline(
    redis_url: str, stand: Stand, rdb: redis.Redis, tmp_path
) -> None:
    """Finding 2 as the review ran it: a voice note whose storage sends a byte a second, then
    another contact's text, one solo worker: the note goes to the bot without text after
    TRANSCRIBE_TIMEOUT_SECONDS, and the other contact waits no longer than that."""
    stand.reset()
    trickle = Server()
    trickle.route = lambda path: (200, {"Content-Type": "audio/ogg"}, b"x" * 600, 1.0, 0.0)
    env = _voice_env(
        redis_url,
        stand,
        tmp_path,
        BATCH_WINDOW_SECONDS="0.5",
        TRANSCRIBE_TIMEOUT_SECONDS="3",
        MEDIA_ALLOWED_HOSTS=f"127.0.0.1:{trickle.port}",
    )
    worker = Worker(env, "trickle", housekeeping=True).start(rdb)
    try:
        web = make_client(env)
        note = cw.audio(None, 701)
        note["attachments"][0]["data_url"] = f"{trickle.url}/media/slow.ogg"
        started = time.monotonic()
        assert post_webhook(web, note).status_code == 202
        time.sleep(0.3)
        assert post_webhook(web, cw.message("another customer, text only", 702)).status_code == 202
        wait_for(lambda: stand.replies(701) and stand.replies(702), timeout=20)
        waited = time.monotonic() - started
        assert waited < 0.5 + 3 + 3  # window, the deadline, the bot and Chatwoot with room
        (call,) = [c for c in stand.bot_calls if str(c["conversation_id"]) == "701"]
        assert "transcribed_text" not in call["messages"][0]["attachments"][0]
        assert rdb.hget(keys.stats("default"), "transcriptions_failed") == "1"
    finally:
        worker.stop()
        trickle.close()


@pytest.mark.slow
def test_a_resumed_batch_uses_the_transcripts_its_first_run_kept(
    redis_url: str, stand: Stand, rdb: redis.Redis, tmp_path
) -> None:
    """Finding 3 as the review ran it, with a crash: twelve voice notes in one burst
    (TRANSCRIBE_MAX_NOTES=10), the worker killed while the bot thinks; the next worker
    asks the bot with the ten transcripts kept in the ledger: ten transcriptions in all,
    not twenty, and one answer."""
    stand.reset()
    env = _voice_env(redis_url, stand, tmp_path, LEASE_TTL_SECONDS="2", SWEEP_INTERVAL_SECONDS="0.5")
    web = make_client(env)
    for n in range(12):
        stand.media[f"n{n}.ogg"] = f"note {n}".encode()
        note = cw.audio(None, 703)
        note["attachments"][0]["data_url"] = f"{stand.url}/rails/active_storage/blobs/n{n}.ogg"
        assert post_webhook(web, note).status_code == 202
    victim = Worker(env, "victim", housekeeping=True).start(rdb)
    stand.bot_delay = 30.0  # the bot thinks; the worker dies meanwhile
    try:
        wait_for(lambda: stand.bot_calls, timeout=20)
        victim.kill()
    finally:
        victim.stop()
    assert len(stand.transcriptions) == 10
    stand.bot_delay = 0.0
    stand.bot_calls.clear()
    rescuer = Worker(env, "rescuer", housekeeping=True).start(rdb)
    try:
        wait_for(lambda: stand.replies(703), timeout=30)
    finally:
        rescuer.stop()
    assert len(stand.transcriptions) == 10
    (call,) = stand.bot_calls
    texts = [m["attachments"][0].get("transcribed_text") for m in call["messages"]]
    assert texts == [f"note {n}" for n in range(10)] + [None, None]
