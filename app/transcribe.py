"""Voice notes: a transcript before the batch goes to the bot.

When ``TRANSCRIBE_BACKEND=openai`` and an audio attachment of a claimed batch
has no ``transcribed_text`` (Chatwoot's own transcription, when it made one,
is used as it is), the drainer fetches the audio from its ``data_url`` (at most
``TRANSCRIBE_MAX_BYTES``, within ``TRANSCRIBE_TIMEOUT_SECONDS``; the media URL
may redirect to the storage service and carries no credential of ours) and
posts it to an OpenAI-compatible ``/audio/transcriptions``
(``TRANSCRIBE_BASE_URL``, else ``OPENAI_BASE_URL``; ``TRANSCRIBE_MODEL``). The
transcript then joins the burst in its place (``StoredMessage.bot_text``).
A note that cannot be fetched or transcribed reaches the bot as an audio
attachment without text: it is never dropped, and the batch never waits longer
than the timeout for it. Its media may answer 404 or 403 for a moment after
``message_created`` (the upload is not finished): that is asked again, with
backoff, within the same timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from urllib.parse import urlparse

import requests

from app.errors import TranscriptionError
from app.outbound import new_session
from app.payload import Attachment, StoredMessage
from app.settings import CompanyConfig

__all__ = ["Transcriber", "with_transcripts"]

log = logging.getLogger(__name__)
NOT_READY_STATUSES = (403, 404)  # the storage does not have the upload yet
NOT_READY_FIRST_PAUSE_SECONDS = 0.25


class _NotReady(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


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
        self._session = session or new_session()

    def transcribe(self, media_url: str) -> str:
        """The transcript of the audio at ``media_url``, or ``TranscriptionError``."""
        end = time.monotonic() + self._timeout
        audio, content_type = self._fetch(media_url, end)
        left = end - time.monotonic()
        if left <= 0:
            raise TranscriptionError(f"no time left to transcribe within {self._timeout:g} s")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        name = urlparse(media_url).path.rsplit("/", 1)[-1] or "voice.ogg"
        try:
            response = self._session.post(
                self._url,
                files={"file": (name, audio, content_type)},
                data={"model": self._model},
                headers=headers,
                timeout=(min(3.05, left), left),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise TranscriptionError(f"transcription request failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise TranscriptionError(f"transcription server answered {response.status_code}")
        try:
            text = response.json()["text"]
        except (ValueError, KeyError, TypeError):
            raise TranscriptionError("transcription answer has no 'text'") from None
        if not isinstance(text, str):
            raise TranscriptionError("transcription 'text' is not a string")
        return text.strip()

    def _fetch(self, media_url: str, end: float) -> tuple[bytes, str]:
        """The voice note's bytes. Chatwoot sends ``message_created`` before its storage
        has the upload, so a 404 or 403 is asked again, with backoff, until ``end``."""
        if urlparse(media_url).scheme not in ("http", "https"):
            raise TranscriptionError("the voice note has no http(s) address")
        pause = NOT_READY_FIRST_PAUSE_SECONDS
        while True:
            try:
                return self._fetch_once(media_url, end)
            except _NotReady as exc:
                if time.monotonic() + pause >= end:
                    raise TranscriptionError(f"fetching the voice note answered {exc.status}") from None
                log.info("voice note not ready yet status=%s: asking again in %.2f s", exc.status, pause)
                time.sleep(pause)
                pause *= 2

    def _fetch_once(self, media_url: str, end: float) -> tuple[bytes, str]:
        try:
            with self._session.get(media_url, stream=True, timeout=(3.05, self._timeout)) as response:
                if response.status_code in NOT_READY_STATUSES:
                    raise _NotReady(response.status_code)
                if response.status_code != 200:
                    raise TranscriptionError(f"fetching the voice note answered {response.status_code}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdecimal() and int(declared) > self._max_bytes:
                    raise TranscriptionError(f"the voice note is larger than {self._max_bytes} bytes")
                chunks, size = [], 0
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise TranscriptionError(f"the voice note is larger than {self._max_bytes} bytes")
                    if time.monotonic() > end:
                        raise TranscriptionError(f"fetching the voice note took over {self._timeout:g} s")
                    chunks.append(chunk)
                content_type = response.headers.get("Content-Type", "application/octet-stream")
        except requests.RequestException as exc:
            raise TranscriptionError(f"fetching the voice note failed: {type(exc).__name__}") from exc
        return b"".join(chunks), content_type


def with_transcripts(
    messages: list[StoredMessage], transcribe: Callable[[str], str], failed: Callable[[str], None]
) -> list[StoredMessage]:
    """``messages`` with every untranscribed voice note transcribed; one that fails is
    kept as it is (``failed`` is told why)."""
    result = []
    for message in messages:
        attachments = list(message.attachments)
        for index, attachment in enumerate(attachments):
            if attachment.file_type != "audio" or attachment.transcribed_text or not attachment.data_url:
                continue
            try:
                text = transcribe(attachment.data_url)
            except TranscriptionError as exc:
                failed(str(exc))
                continue
            attachments[index] = dataclasses.replace(attachment, transcribed_text=text or None)
        changed: tuple[Attachment, ...] = tuple(attachments)
        result.append(
            dataclasses.replace(message, attachments=changed) if changed != message.attachments else message
        )
    return result
