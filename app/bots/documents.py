"""Documents a contact sends (Chatwoot's ``file_type: "file"``): a PDF's text reaches the
bot with the batch (``[document: …]`` in its text, ``attachments[].text`` in the request);
any other file, or a PDF that cannot be read, reaches it as its link, with why in
``attachments[].error``. Never dropped.

A document comes from anyone, so: it is fetched through the media guard
(``app.bots.media``: Chatwoot's origin, ``MEDIA_ALLOWED_HOSTS``, else public addresses),
at most ``DOCUMENT_MAX_BYTES``; its text is read in a process of its own
(``app.pdf_text``) with a CPU and a memory limit, the first ``DOCUMENT_MAX_PAGES`` pages,
at most ``DOCUMENT_MAX_CHARS`` characters; fetch and reading share one deadline,
``DOCUMENT_TIMEOUT_SECONDS``; at most ``DOCUMENTS_PER_BATCH`` documents a batch. What is
read (or why not) is kept in the batch's ledger (``app.bots.reading``): a batch run again
never reads a document twice. ``DOCUMENT_MAX_PAGES=0`` reads none."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from app.bots.media import Origins, deadline, fetch, guarded_session
from app.bots.reading import FAILED, TEXT
from app.chatwoot.messages import Attachment
from app.errors import MediaError
from app.settings import CompanyConfig

__all__ = ["DOCUMENTS_PER_BATCH", "DocumentReader", "pdf_text", "wants_document"]

DOCUMENTS_PER_BATCH = 3
READER_MEMORY_BYTES = 512 * 1024 * 1024
_ROOT = Path(__file__).resolve().parents[2]  # where ``app`` is importable from


def wants_document(attachment: Attachment) -> bool:
    """A file that may be a PDF: its address names a ``.pdf`` or no type at all (any other
    file goes to the bot as its link, unfetched)."""
    if attachment.file_type != "file" or not attachment.data_url or attachment.text:
        return False
    name = urlparse(attachment.data_url).path.rsplit("/", 1)[-1].lower()
    return name.endswith(".pdf") or "." not in name


def pdf_text(data: bytes, max_pages: int, max_chars: int, end: float) -> str:
    """The text of the PDF ``data``, read apart before ``end`` (monotonic), or ``MediaError``."""
    left = end - time.monotonic()
    if left <= 0.1:
        raise MediaError("no time left to read the document")
    command = [sys.executable, "-m", "app.pdf_text", str(max_pages), str(max_chars)]
    command += [str(int(left) + 1), str(READER_MEMORY_BYTES)]
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command (this package's reader); the PDF goes on stdin
            command,
            input=data,
            capture_output=True,
            timeout=left,
            cwd=_ROOT,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(_ROOT)},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MediaError("reading the document took too long") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        why = lines[-1][:200] if lines else f"the reader stopped ({done.returncode})"
        raise MediaError(f"the PDF could not be read: {why}")
    return str(json.loads(done.stdout)["text"])


def _is_pdf(data: bytes, content_type: str) -> bool:
    return data.lstrip()[:5] == b"%PDF-" or content_type.split(";")[0].strip().lower() == "application/pdf"


class DocumentReader:
    """Reads the documents of one batch (at most ``DOCUMENTS_PER_BATCH``)."""

    def __init__(self, config: CompanyConfig) -> None:
        self._config = config
        self._origins = Origins.of(config)
        self._left = DOCUMENTS_PER_BATCH

    def read(self, attachment: Attachment) -> str:
        """``TEXT`` + the document's text, or ``FAILED`` + why the bot gets its link only."""
        config = self._config
        if self._left <= 0:
            return FAILED + f"over the batch's {DOCUMENTS_PER_BATCH} documents"
        self._left -= 1
        assert attachment.data_url
        end = time.monotonic() + config.document_timeout_seconds
        try:
            with guarded_session(self._origins) as session, deadline(end):
                data, kind = fetch(
                    session,
                    self._origins,
                    attachment.data_url,
                    end,
                    config.document_max_bytes,
                    "the document",
                )
            if not _is_pdf(data, kind):
                return FAILED + f"the document is {kind.split(';')[0] or 'untyped'}, not a PDF: not read"
            text = pdf_text(data, config.document_max_pages, config.document_max_chars, end).strip()
        except MediaError as exc:
            return FAILED + str(exc)
        return TEXT + text if text else FAILED + "the PDF has no text to read (a scan?)"
