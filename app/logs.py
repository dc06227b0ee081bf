"""Logging: one line per event with ``key=value`` fields, or JSON lines.

``LOG_FORMAT=json`` turns every record into one JSON object; the
``company=… conversation=… task=…`` fields of the message become keys of
their own, so a log pipeline can filter on them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = [
    "TEXT_FORMAT",
    "JsonFormatter",
    "MaskSecrets",
    "Sampled",
    "configure_logging",
    "mask_secrets",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_FIELD = re.compile(r"(\w+)=(\S+)")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in _FIELD.findall(message):
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


# A credential in a URL: a query value whose name says it is one (?token=, &api_key=,
# X-Amz-Signature=, ...), or any user information before the host (user:password@,
# :password@ as redis://:pw@ writes it, a lone token@).
_QUERY_SECRET = re.compile(
    r"([?&;](?:[\w.-]*[_.-])?(?:api-?key|apikey|token|key|secret|password|passwd|pwd|auth|sig|signature"
    r"|credential)=)[^&;#\s\"'()]+",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(\w+://)[^/\s@?#]+@")


def mask_secrets(text: str) -> str:
    """``text`` with credentials inside URLs masked (a query value named like a secret,
    any ``user:password@``, ``:password@`` or ``token@``): for log lines, the printed
    configuration and errors kept in dead letters."""
    return _URL_PASSWORD.sub(r"\1***@", _QUERY_SECRET.sub(r"\1REDACTED", text))


class MaskSecrets(logging.Filter):
    """Masks credentials inside URLs in a record's message: a ``?token=`` query (gunicorn
    prints the request URI when a request fails or its worker times out) and a
    ``user:password@`` part. Installed on every handler this process logs through."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def configure_logging(level: str, fmt: str) -> None:
    """Send every logger's records to stderr, as text or JSON lines, credentials masked.
    (The periodic work runs on threads of the worker, app.schedule.housekeeping, not as Celery
    tasks: Celery writes no routine lines about it.)"""
    handler = logging.StreamHandler()
    handler.addFilter(MaskSecrets())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Sampled:
    """At most one line per kind every ``every`` seconds, for lines an outsider can
    cause at will (refused webhooks): the next line written says how many were not.
    Kinds are a small fixed set chosen by the caller, never taken from the request."""

    def __init__(
        self, logger: logging.Logger, every: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger, self._every, self._clock = logger, every, clock
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}  # kind -> (last written, not written since)

    def log(self, level: int, kind: str, message: str, *args: object) -> bool:
        """Write the line unless one of this kind was written less than ``every`` ago;
        True when written."""
        now = self._clock()
        with self._lock:
            last, skipped = self._seen.get(kind, (None, 0))
            if last is not None and now - last < self._every:
                self._seen[kind] = (last, skipped + 1)
                return False
            self._seen[kind] = (now, 0)
        if skipped:
            message += f" ({skipped} more like it in the last {self._every:g} s not logged)"
        self._logger.log(level, message, *args)
        return True
