"""Real processes for the tests: redis-server, a Celery worker, start.sh, and a
local HTTP server standing in for Chatwoot's REST API and for an HTTP bot."""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def ensure_redis_server() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    if os.geteuid() == 0:  # the README's `make test` installs it; this covers a bare pytest
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=False)
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
    return path


class Listener(ThreadingHTTPServer):
    """A test server with a real server's accept backlog: socketserver's default of 5
    refuses connections when forty client threads connect at once (Chatwoot behind nginx
    and a bot behind its proxy accept hundreds)."""

    request_queue_size = 1024
    daemon_threads = True


class RedisServer:
    """A redis-server on a free port that a test may stop and start again."""

    def __init__(
        self,
        data_dir: Path,
        persistent: bool = False,
        password: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self._extra = list(extra)  # more redis-server arguments (e.g. a maxmemory-policy)
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._dir = data_dir
        self._persistent = persistent
        self._password = password
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        aof = ["--appendonly", "no"]
        if self._persistent:
            aof = ["--appendonly", "yes", "--appendfsync", "always"]
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self._dir)]
        self._proc = subprocess.Popen(
            [ensure_redis_server(), *args, *aof, *self._auth_args(), *self._extra, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self._password)
        wait_for(lambda: _pings(client), timeout=10)

    def _auth_args(self) -> list[str]:
        return ["--requirepass", self._password] if self._password else []

    def stop(self) -> None:
        if self._proc:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class Proxy:
    """A TCP proxy to a local server (Redis) that a test can cut and restore: a process
    connected through it is cut off from Redis while the others are not."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._cut = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut(self) -> None:
        """Close every connection; refuse new ones until ``restore``."""
        self._cut.set()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        self._cut.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            if self._cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.close()
            except OSError:
                pass


def boot_start_sh(env: dict[str, str], log: Path, script: Path = ROOT / "start.sh") -> subprocess.Popen:
    """start.sh as the container runs it, in its own session, its output into ``log``
    (``env``'s own PATH or HOME, when it has one, is kept; ``script``: another copy's)."""
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp"), **env}
    with open(log, "w") as out:
        return subprocess.Popen(
            ["bash", str(script)],
            cwd=script.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class Stand:
    """Chatwoot's REST API and an HTTP bot on one local port, recording everything.

    The bot (POST /bot) echoes the text it receives, after ``bot_delay`` seconds,
    and records for every conversation how many calls were in flight at once.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.bot_calls: list[dict[str, Any]] = []
        self.bot_spans: list[tuple[str, float, float]] = []  # (conversation, started, answered) per call
        self.bot_delay = 0.0
        self.bot_answer: Callable[[dict[str, Any]], Any] | None = None
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.fail_next: list[int] = []  # statuses to answer message creates with, first
        self.fail_after_create: list[int] = []  # statuses to answer creates with *after* creating
        self.clock_offset = 0.0  # Chatwoot's clock minus this machine's (its created_at)
        self.completions: list[dict[str, Any]] = []  # requests to /v1/chat/completions
        self.while_completing: Callable[[], None] | None = None  # runs once while the model "thinks"
        self.on_message_created: Callable[[], None] | None = None  # runs before the answer is sent
        self.message_delay = 0.0  # seconds before answering a message create (after recording it)
        self.api_token = "cw-token"  # the api_access_token this Chatwoot accepts
        self.can_read = False  # a user token may list messages; an agent-bot token may not
        self.trickle: dict[str, float] = {}  # conversation -> seconds between the bot answer's bytes
        self.stall_at: dict[int, float] = {}  # create number (1-based) -> stall, then 504, nothing created
        self.media: dict[str, bytes] = {}  # /media/<name> -> bytes (Chatwoot's storage, behind a redirect)
        self.transcriptions: list[dict[str, Any]] = []  # requests to /v1/audio/transcriptions
        self.transcribe_status = 200
        self._creates = 0
        self._next_id = 100000
        self.server = Listener(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bot_calls.clear()
            self.bot_spans.clear()
            self.in_flight.clear()
            self.max_in_flight.clear()
            self.fail_next.clear()
            self.fail_after_create.clear()
            self.clock_offset = 0.0
            self.completions.clear()
            self.while_completing = None
            self.on_message_created = None
            self.can_read = False
            self.message_delay = 0.0
            self.bot_delay = 0.0
            self.bot_answer = None
            self.trickle.clear()
            self.stall_at.clear()
            self.media.clear()
            self.transcriptions.clear()
            self.transcribe_status = 200
            self._creates = 0

    def replies(self, conversation: int | str | None = None) -> list[str]:
        """Contents of the public messages the gateway created, in arrival order."""
        return self._messages(conversation, private=False)

    def notes(self, conversation: int | str | None = None) -> list[str]:
        """Contents of the private notes the gateway created, in arrival order."""
        return self._messages(conversation, private=True)

    def _messages(self, conversation: int | str | None, private: bool) -> list[str]:
        with self.lock:
            return [
                r["json"]["content"]
                for r in self.requests
                if r["path"].endswith("/messages")
                and (r["json"].get("private") is True) == private
                and (conversation is None or f"/conversations/{conversation}/" in r["path"])
            ]

    def message_times(self) -> dict[int, list[float]]:
        """Conversation -> when each message the gateway created there arrived, in order."""
        times: dict[int, list[float]] = defaultdict(list)
        for call in self.calls("messages"):
            times[int(call["path"].split("/conversations/")[1].split("/")[0])].append(call["at"])
        return dict(times)

    def calls(self, action: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/" + action)]

    def _bot(self, body: dict[str, Any]) -> tuple[int, Any]:
        conv = str(body.get("conversation_id"))
        started = time.time()
        with self.lock:
            self.in_flight[conv] += 1
            self.max_in_flight[conv] = max(self.max_in_flight[conv], self.in_flight[conv])
            self.bot_calls.append(body)
        try:
            time.sleep(self.bot_delay)
            answer = self.bot_answer(body) if self.bot_answer else {"reply": body["text"]}
        finally:
            with self.lock:
                self.in_flight[conv] -= 1
                self.bot_spans.append((conv, started, time.time()))
        return answer if isinstance(answer, tuple) else (200, answer)

    def _completion(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        """An OpenAI-compatible server: answers "you said: <last user text>"."""
        with self.lock:
            self.completions.append({"json": body, "authorization": headers.get("Authorization")})
            hook, self.while_completing = self.while_completing, None
        if hook:
            hook()
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else next(p["text"] for p in last if p["type"] == "text")
        content = "[handoff] a human will call you" if "human" in text else f"you said: {text}"
        return 200, {
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            ],
        }

    def _transcription(self, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        """An OpenAI-compatible /audio/transcriptions: the "audio" is the text it says."""
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {headers.get('Content-Type', '')}\r\n\r\n".encode() + raw
        )
        fields = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
        audio = fields["file"].get_payload(decode=True)
        with self.lock:
            self.transcriptions.append(
                {
                    "model": fields["model"].get_payload(decode=True).decode(),
                    "authorization": headers.get("Authorization"),
                    "bytes": len(audio),
                }
            )
        if self.transcribe_status != 200:
            return self.transcribe_status, {"error": "injected failure"}
        return 200, {"text": audio.decode()}

    def _chatwoot(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        if not re.match(
            r"^/api/v1/accounts/\d+/conversations/\d+/(messages|toggle_typing_status|toggle_status|assignments)$",
            path,
        ):
            return 404, {"error": "not found"}
        if headers.get("api_access_token") != self.api_token:
            return 401, {"error": "Invalid Access Token"}
        stall = None
        if path.endswith("/messages"):
            with self.lock:
                self._creates += 1
                stall = self.stall_at.pop(self._creates, None)
        if stall is not None:  # a create lost on its way: slow, then an error, no message made
            time.sleep(stall)
            return 504, {"error": "gateway timeout"}
        with self.lock:
            if path.endswith("/messages") and self.fail_next:
                return self.fail_next.pop(0), {"error": "injected failure"}
            self._next_id += 1
            self.requests.append({"path": path, "json": body, "at": time.time(), "id": self._next_id})
            created = {"id": self._next_id, "content": body.get("content"), "message_type": 1}
            after = (
                self.fail_after_create.pop(0) if path.endswith("/messages") and self.fail_after_create else 0
            )
        hook = self.on_message_created
        if hook and path.endswith("/messages"):
            hook()
        if path.endswith("/messages"):
            time.sleep(self.message_delay)
        if after:  # created, then the proxy in front of Chatwoot (or a listener) fails the request
            return after, {"error": "Bad Gateway"}
        return 200, created

    def _list_messages(self, path: str) -> tuple[int, Any]:
        """GET .../messages, shaped like Chatwoot's messages/index.json.jbuilder."""
        if not self.can_read:
            return 401, {"error": "You are not authorized to do this action"}
        conv = path.split("/conversations/")[1].split("/")[0]
        with self.lock:
            mine = [r for r in self.requests if r["path"].endswith(f"/conversations/{conv}/messages")]
            payload = [
                {
                    "id": r["id"],  # the id the create answered with
                    "content": r["json"]["content"],
                    "message_type": 1,  # integer here, as messages/index.json.jbuilder renders it
                    "created_at": int(r["at"] + self.clock_offset),  # unix seconds, Chatwoot's clock
                    "private": False,
                    "conversation_id": int(conv),
                }
                for r in mine[-20:]
            ]
        return 200, {"meta": {"labels": [], "contact_id": 301}, "payload": payload}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Chatwoot behind its proxy answers
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/rails/active_storage/blobs/"):  # redirects to storage
                    self.send_response(302)
                    self.send_header("Location", "/media/" + self.path.rsplit("/", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.startswith("/media/"):
                    media = stand.media.get(self.path.rsplit("/", 1)[1])
                    self.send_response(200 if media is not None else 404)
                    self.send_header("Content-Type", "audio/ogg")
                    self.send_header("Content-Length", str(len(media or b"")))
                    self.end_headers()
                    self.wfile.write(media or b"")
                    return
                status, answer = stand._list_messages(self.path)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = {} if self.path == "/v1/audio/transcriptions" else json.loads(raw or b"{}")
                trickle = 0.0
                if self.path == "/v1/audio/transcriptions":
                    status, answer = stand._transcription(raw, dict(self.headers))
                elif self.path == "/bot":
                    status, answer = stand._bot(body)
                    trickle = stand.trickle.get(str(body.get("conversation_id")), 0.0)
                elif self.path == "/v1/chat/completions":
                    status, answer = stand._completion(body, dict(self.headers))
                else:
                    status, answer = stand._chatwoot(self.path, body, dict(self.headers))
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not trickle:
                    self.wfile.write(data)
                    return
                for byte in data:  # headers at once, then the body a byte at a time
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return  # the gateway gave up and closed the connection
                    time.sleep(trickle)

        return Handler


class Worker:
    """A real ``celery -A app.worker worker`` process."""

    def __init__(
        self,
        env: dict[str, str],
        name: str,
        pool: str = "solo",
        housekeeping: bool = False,
        concurrency: int = 1,
        prefetch: int = 1,
    ) -> None:
        self.env, self.name, self.pool, self.concurrency = env, name, pool, concurrency
        self.housekeeping = housekeeping  # the sweeper, gauges and session expiry (app.schedule.housekeeping)
        self.prefetch = prefetch  # start.sh's CELERY_PREFETCH_MULTIPLIER
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(env.get("TEST_LOG_DIR", "/tmp")) / f"worker-{name}-{os.getpid()}.log"

    def start(self, client: redis.Redis) -> Worker:
        args = [
            str(BIN / "celery"),
            "-A",
            "app.worker",
            "worker",
            f"--pool={self.pool}",
            f"--concurrency={self.concurrency}",
            f"--prefetch-multiplier={self.prefetch}",
            "--loglevel=INFO",
            f"--hostname={self.name}@%h",
            "--without-mingle",
            "--without-gossip",
        ]
        if not self.housekeeping:
            args.append("--no-housekeeping")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        hostname = f"{self.name}@{socket.gethostname()}"
        wait_for(lambda: client.zscore("gateway:worker_heartbeats", hostname) or self._died(), timeout=30)
        return self

    def _died(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise AssertionError(f"worker exited: {self.log_path.read_text()[-3000:]}")
        return False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever it started, too
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the process group
            except ProcessLookupError:
                pass
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()
