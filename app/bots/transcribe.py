"""Voice notes: a transcript before the batch goes to the bot.

When ``TRANSCRIBE_BACKEND=openai`` and an audio attachment of a claimed batch
has no ``transcribed_text`` (Chatwoot's own transcription, when it made one,
is used as it is), the drainer fetches the audio from its ``data_url`` (at most
``TRANSCRIBE_MAX_BYTES``) and posts it to an OpenAI-compatible
``/audio/transcriptions`` (``TRANSCRIBE_BASE_URL``, else ``OPENAI_BASE_URL``;
``TRANSCRIBE_MODEL``). The transcript then joins the burst in its place
(``StoredMessage.bot_text``). A note that cannot be fetched or transcribed reaches
the bot as an audio attachment without text: it is never dropped.

The ``data_url`` comes from a webhook, so whoever can post one chooses it. The fetch
therefore (review 2026-12-03, findings 1-3):

* goes only to Chatwoot's own origin (``CHATWOOT_BASE_URL``), to the hosts of
  ``MEDIA_ALLOWED_HOSTS`` when that is set, and otherwise to any host **at a public
  address**: the address actually connected is checked (after DNS, on every
  redirect hop; a name that resolves to loopback, a private, link-local, multicast or
  reserved address is refused), so neither a redirect nor DNS rebinding reaches
  inside the deployment;
* follows at most ``MAX_REDIRECTS`` redirects, by hand, each hop checked;
* has one wall-clock deadline (``TRANSCRIBE_TIMEOUT_SECONDS``, or less when the
  batch's budget has less left) for the fetch and the transcription together: at the
  deadline a watchdog shuts the socket, whatever the server trickles (requests' read
  timeout applies to each read, so a byte a second never trips it);
* is bounded per batch: at most ``TRANSCRIBE_MAX_NOTES`` notes and
  ``TRANSCRIBE_BUDGET_SECONDS`` in all (the rest go to the bot without text), and
  each transcript (or failure) is kept in the batch's ledger, so a batch that is
  run again never fetches or pays for a note twice.

Its media may answer 404 or 403 for a moment after ``message_created`` (the upload
is not finished): that is asked again, with backoff, within the same deadline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from urllib.parse import urlparse

import requests
import requests.adapters

from app.bots.media import Origins, deadline, fetch, guarded_session, origin_of
from app.bots.reading import FAILED, TEXT, read_attachments
from app.chatwoot.messages import Attachment, StoredMessage
from app.errors import MediaError, TranscriptionError
from app.outbound import read_body
from app.settings import CompanyConfig

__all__ = ["Budget", "Transcriber", "with_transcripts"]

log = logging.getLogger(__name__)
MAX_TRANSCRIPT_BYTES = 256 * 1024  # the provider's answer (a transcript of a long note is ~20 KB)


# -- the transcriber ------------------------------------------------------------------


class Transcriber:
    """Fetches a voice note and asks an OpenAI-compatible server for its transcript."""

    def __init__(self, config: CompanyConfig, session: requests.Session | None = None) -> None:
        base = config.transcribe_base_url or config.openai_base_url
        assert base
        self._url = f"{base}/audio/transcriptions"
        self._key = config.transcribe_api_key or config.openai_api_key
        self._model = config.transcribe_model
        self._max_bytes = config.transcribe_max_bytes
        self._timeout = config.transcribe_timeout_seconds
        self._origins = Origins.of(config)
        self._media = session or guarded_session(self._origins)
        # the provider is the operator's choice: any address, but the same deadline
        self._provider = guarded_session(Origins((origin_of(self._url),), only_trusted=True))

    def transcribe(self, media_url: str, seconds: float | None = None) -> str:
        """The transcript of the audio at ``media_url``, or ``TranscriptionError``;
        ``seconds`` (at most ``TRANSCRIBE_TIMEOUT_SECONDS``) bounds the fetch and the
        transcription together, whatever the servers do."""
        limit = min(self._timeout, seconds) if seconds is not None else self._timeout
        end = time.monotonic() + limit
        with deadline(end) as watch:
            try:
                audio, content_type = self._fetch(media_url, end)
                return self._ask(media_url, audio, content_type, end)
            except TranscriptionError:
                # The watchdog, or a read's own timeout set to the time left, whichever
                # came first: either way the deadline is what ended it.
                if watch.fired or time.monotonic() >= end - 0.05:
                    raise TranscriptionError(f"the voice note took over {limit:g} s: given up") from None
                raise

    def _ask(self, media_url: str, audio: bytes, content_type: str, end: float) -> str:
        left = end - time.monotonic()
        if left <= 0:
            raise TranscriptionError("no time left to transcribe the voice note")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        name = urlparse(media_url).path.rsplit("/", 1)[-1] or "voice.ogg"
        try:
            response = self._provider.post(
                self._url,
                files={"file": (name, audio, content_type)},
                data={"model": self._model},
                headers=headers,
                timeout=(min(3.05, left), left),
                allow_redirects=False,
                stream=True,
            )
            body = read_body(response, end, MAX_TRANSCRIPT_BYTES)
        except requests.RequestException as exc:
            raise TranscriptionError(f"transcription request failed: {type(exc).__name__}") from exc
        except ValueError as exc:
            raise TranscriptionError(f"transcription answer: {exc}") from None
        if response.status_code != 200:
            raise TranscriptionError(f"transcription server answered {response.status_code}")
        try:
            text = json.loads(body)["text"]
        except (ValueError, KeyError, TypeError):
            raise TranscriptionError("transcription answer has no 'text'") from None
        if not isinstance(text, str):
            raise TranscriptionError("transcription 'text' is not a string")
        return text.strip()

    def _fetch(self, media_url: str, end: float) -> tuple[bytes, str]:
        try:
            return fetch(self._media, self._origins, media_url, end, self._max_bytes, "the voice note")
        except MediaError as exc:
            raise TranscriptionError(str(exc)) from None


# -- a batch's notes ------------------------------------------------------------------


@dataclasses.dataclass
class Budget:
    """What one batch may spend on transcription: ``notes`` more notes, until ``end``
    (monotonic)."""

    notes: int
    end: float

    @classmethod
    def of(cls, config: CompanyConfig) -> Budget:
        return cls(config.transcribe_max_notes, time.monotonic() + config.transcribe_budget_seconds)

    def take(self) -> float | None:
        """Seconds for one more note, or None when the budget is spent."""
        left = self.end - time.monotonic()
        if self.notes <= 0 or left <= 0.5:
            return None
        self.notes -= 1
        return left


def with_transcripts(
    messages: list[StoredMessage],
    transcribe: Callable[[str, float], str],
    budget: Budget,
    kept: Callable[[int, int], str | None],
    keep: Callable[[int, int, str], None],
    failed: Callable[[str], None],
) -> list[StoredMessage]:
    """``messages`` with their untranscribed voice notes transcribed within ``budget``.
    ``kept(message id, index)`` is what an earlier run of the batch stored (``text:`` or
    ``failed:``), used as it is; what this run finds is stored with ``keep``. A note that
    fails, or that the budget does not reach, goes on without text (``failed`` is told
    why; so is the bot, in the attachment's ``error``), and so it does in any run of the
    batch again: its cost is paid once."""

    def read(attachment: Attachment) -> str:
        assert attachment.data_url
        seconds = budget.take()
        try:
            if seconds is None:
                raise TranscriptionError(
                    "over the batch's transcription budget (TRANSCRIBE_MAX_NOTES, _BUDGET_SECONDS)"
                )
            return TEXT + transcribe(attachment.data_url, seconds)
        except TranscriptionError as exc:
            failed(str(exc))
            return FAILED + str(exc)

    def wants(attachment: Attachment) -> bool:
        return (
            attachment.file_type == "audio" and not attachment.transcribed_text and bool(attachment.data_url)
        )

    return read_attachments(messages, wants, read, kept, keep, "transcribed_text")
