"""The local HTTP servers standing in for Chatwoot's REST API and for an HTTP bot,
shaped as DESIGN §4 says."""

from __future__ import annotations

import email.parser
import email.policy
import json
import mimetypes
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.common import Listener


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
        self.usage = (120, 30)
        self.while_completing: Callable[[], None] | None = None  # runs once while the model "thinks"
        self.failing_models: dict[str, int] = {}  # model -> the HTTP status it answers with
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
            self.failing_models.clear()
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
            self.usage = (120, 30)  # what each completion says it took (tokens in, out)
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
        failing = self.failing_models.get(body.get("model", ""))
        if failing:
            return failing, {"error": {"message": "the model is overloaded", "type": "server_error"}}
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else next(p["text"] for p in last if p["type"] == "text")
        content = "[handoff] a human will call you" if "human" in text else f"you said: {text}"
        prompt, completion = self.usage
        return 200, {
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            ],
        }

    @staticmethod
    def _form(raw: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """A multipart message create: its fields, and ``attachments`` as what each file was."""
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {headers.get('Content-Type', '')}\r\n\r\n".encode() + raw
        )
        body: dict[str, Any] = {"attachments": []}
        for part in form.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            if part.get_filename():
                body["attachments"].append(
                    {
                        "field": name,
                        "filename": part.get_filename(),
                        "type": part.get_content_type(),
                        "data": data,
                    }
                )
            else:
                body[name] = data.decode()
        return body

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
                    name = self.path.rsplit("/", 1)[1]
                    self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "audio/ogg")
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
                multipart = self.headers.get("Content-Type", "").startswith("multipart/form-data")
                if self.path == "/v1/audio/transcriptions":
                    body = {}
                elif multipart:  # a message with attachments, as Chatwoot's API takes it
                    body = stand._form(raw, dict(self.headers))
                else:
                    body = json.loads(raw or b"{}")
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
