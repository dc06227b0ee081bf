"""The media of a bot's reply (``{"media": ["https://…"]}``), fetched for upload with the
message: through the same guard as the media a webhook names (``app.bots.media``: Chatwoot's
origin, ``MEDIA_ALLOWED_HOSTS``, else public addresses only — a prompt-injected model must
not make the worker fetch an internal address), at most ``REPLY_MEDIA_MAX_BYTES`` each,
within ``REPLY_MEDIA_SECONDS`` for the part, and only of a type WhatsApp can carry. What
cannot be fetched goes as its link at the end of the text instead, and is logged and
counted: the contact still gets it, and the answer is not lost."""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote, urlparse

from app.bots.media import Origins, deadline, fetch_once, guarded_session
from app.chatwoot.client import File
from app.errors import MediaError
from app.settings import CompanyConfig

__all__ = ["REPLY_MEDIA_SECONDS", "REPLY_MEDIA_TYPES", "fetch_reply_media"]

log = logging.getLogger(__name__)
REPLY_MEDIA_SECONDS = 20.0
# What WhatsApp sends as media (image, video, audio, document); an HTML error page is not.
REPLY_MEDIA_TYPES = (
    "image/",
    "video/",
    "audio/",
    "application/pdf",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.ms-",
    "text/plain",
    "text/csv",
)


def _name(url: str, index: int, content_type: str) -> str:
    name = unquote(urlparse(url).path.rsplit("/", 1)[-1])[:100].strip()
    return name or f"file{index + 1}.{content_type.split('/')[-1].split(';')[0] or 'bin'}"


def fetch_reply_media(config: CompanyConfig, urls: tuple[str, ...]) -> tuple[tuple[File, ...], list[str]]:
    """The files to upload, and the URLs that could not be fetched (each logged)."""
    if not urls:
        return (), []
    origins = Origins.of(config)
    session = guarded_session(origins)
    end = time.monotonic() + REPLY_MEDIA_SECONDS
    files: list[File] = []
    failed: list[str] = []
    with session, deadline(end):
        for index, url in enumerate(urls):
            try:
                data, content_type = fetch_once(
                    session, origins, url, end, config.reply_media_max_bytes, "the reply's media"
                )
                kind = content_type.split(";")[0].strip().lower()
                if not kind.startswith(REPLY_MEDIA_TYPES):
                    raise MediaError(f"the reply's media is {kind or 'untyped'}, not a type WhatsApp sends")
                files.append((_name(url, index, kind), data, kind))
            except MediaError as exc:
                log.warning(
                    "reply media not attached company=%s url=%s: %s", config.company_id, url[:200], exc
                )
                failed.append(url)
    return tuple(files), failed
