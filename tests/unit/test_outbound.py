"""Outbound retries against a real local HTTP server with scripted failures."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from app.errors import ChatwootError
from app.outbound import post_json
from tests.support import Listener, free_port


class Scripted:
    """Answers each POST with the next scripted (status, headers, delay)."""

    def __init__(self, script: list[tuple[int, dict[str, str], float]]) -> None:
        self.script = list(script)
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.hits += 1
                status, headers, delay = owner.script.pop(0) if owner.script else (200, {}, 0.0)
                time.sleep(delay)
                body = b'{"id": 1}'
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = Listener(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/x"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def call(url: str, *, idempotent: bool = False, retries: int = 3, timeout: float = 2.0):  # type: ignore[no-untyped-def]
    waits: list[float] = []
    response = post_json(
        requests.Session(),
        url,
        {"a": 1},
        error=ChatwootError,
        timeout=timeout,
        retries=retries,
        idempotent=idempotent,
        sleep=waits.append,
    )
    return response, waits


def test_5xx_and_429_are_retried_with_backoff_and_retry_after() -> None:
    server = Scripted([(500, {}, 0), (429, {"Retry-After": "7"}, 0), (503, {}, 0)])
    try:
        response, waits = call(server.url, idempotent=True)
        assert response.status_code == 200 and server.hits == 4
        assert waits[1] == 7.0  # Retry-After honoured
        assert 0.4 <= waits[0] <= 0.6 and 1.6 <= waits[2] <= 2.4  # exponential backoff with jitter
    finally:
        server.close()


def test_retries_are_bounded() -> None:
    server = Scripted([(500, {}, 0)] * 10)
    try:
        with pytest.raises(ChatwootError, match="answered 500") as info:
            call(server.url, retries=2, idempotent=True)
        assert server.hits == 3 and info.value.status == 500 and not info.value.ambiguous
    finally:
        server.close()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_on_a_create_is_ambiguous_and_never_re_posted(status: int) -> None:
    """Review finding 3: a proxy's 502/504 after Chatwoot created the message, or a listener
    failing after the commit, answers 5xx for a message that exists: posting again would
    send it twice. The caller settles it by read-back or records it as ambiguous."""
    server = Scripted([(status, {}, 0)] * 3)
    try:
        with pytest.raises(ChatwootError, match=f"answered {status}") as info:
            call(server.url)
        assert info.value.ambiguous and info.value.status == status and server.hits == 1
    finally:
        server.close()


def test_a_429_on_a_create_is_retried_it_was_refused() -> None:
    server = Scripted([(429, {"Retry-After": "1"}, 0)])
    try:
        response, waits = call(server.url)
        assert response.status_code == 200 and server.hits == 2 and waits == [1.0]
    finally:
        server.close()


def test_4xx_is_not_retried() -> None:
    server = Scripted([(422, {}, 0)])
    try:
        with pytest.raises(ChatwootError, match="422"):
            call(server.url)
        assert server.hits == 1
    finally:
        server.close()


def test_read_timeout_on_a_create_is_ambiguous_and_never_re_posted() -> None:
    server = Scripted([(200, {}, 1.5)])
    try:
        with pytest.raises(ChatwootError) as info:
            call(server.url, timeout=0.5)
        assert info.value.ambiguous and server.hits == 1
    finally:
        server.close()


def test_read_timeout_on_an_idempotent_call_is_retried() -> None:
    server = Scripted([(200, {}, 1.5)])
    try:
        response, _ = call(server.url, timeout=0.5, idempotent=True)
        assert response.status_code == 200 and server.hits == 2
    finally:
        server.close()


def test_connection_refused_is_retried_then_fails_unambiguously() -> None:
    with pytest.raises(ChatwootError, match="connection") as info:
        call(f"http://127.0.0.1:{free_port()}/x", retries=2)
    assert not info.value.ambiguous


class Recording(Scripted):
    """A second host: records the headers of every request it receives."""

    def __init__(self) -> None:
        super().__init__([])
        self.seen: list[dict[str, str]] = []
        original = self.server.RequestHandlerClass.do_POST
        owner = self

        def do_post(handler) -> None:  # type: ignore[no-untyped-def]
            owner.seen.append(dict(handler.headers))
            original(handler)

        self.server.RequestHandlerClass.do_POST = do_post  # type: ignore[method-assign]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_the_token_stays_home(status: int) -> None:
    """requests keeps custom headers (api_access_token) across hosts when it follows a
    redirect: a Chatwoot URL that redirects must not hand the token to another host."""
    elsewhere = Recording()
    home = Scripted([(status, {"Location": elsewhere.url.replace("127.0.0.1", "localhost")}, 0.0)])
    try:
        with pytest.raises(ChatwootError, match=f"answered {status}, a redirect to localhost") as caught:
            post_json(
                requests.Session(),
                home.url,
                {"content": "hi"},
                error=ChatwootError,
                timeout=2,
                retries=2,
                headers={"api_access_token": "secret-token"},
            )
        assert caught.value.status == status and not caught.value.ambiguous
        assert home.hits == 1 and elsewhere.seen == []  # not retried, not followed
    finally:
        home.close()
        elsewhere.close()


def test_error_messages_name_the_host_never_credentials() -> None:
    with pytest.raises(ChatwootError) as caught:
        post_json(
            requests.Session(),
            f"http://user:pa55word@127.0.0.1:{free_port()}/api",
            {},
            error=ChatwootError,
            timeout=1,
            retries=0,
        )
    assert "127.0.0.1" in str(caught.value) and "pa55word" not in str(caught.value)


def test_many_threads_sharing_one_session_each_get_their_answer(stand) -> None:  # type: ignore[no-untyped-def]
    """A worker's threads share one keep-alive session (CELERY_POOL=threads). A connection
    goes back to the session's pool as soon as its answer is read, where another thread
    takes it or, the pool being full, it is closed: the deadline's reader must not touch
    its socket after that (it did: "Bad file descriptor", a failed bot call)."""
    from concurrent.futures import ThreadPoolExecutor

    from app.errors import BotError

    stand.reset()
    stand.bot_delay = 0.05
    session = requests.Session()  # requests' own pool: 10 connections per host

    def ask(number: int) -> str:
        response = post_json(
            session,
            f"{stand.url}/bot",
            {"conversation_id": number, "text": f"question {number}"},
            error=BotError,
            timeout=5,
            retries=0,
            idempotent=True,
            deadline=5,
        )
        return response.json()["reply"]

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(ask, range(200)))
    assert answers == [f"question {n}" for n in range(200)]
