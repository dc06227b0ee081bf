"""A local durable spool for what the webhook accepts while Redis is unreachable.

Chatwoot never retries an account webhook, and retries an agent-bot delivery
only on 429/500 (three times, 3 s apart) before opening the conversation to
humans: a 500 during a Redis outage loses the message or the conversation. So
while Redis is down the webhook appends each accepted event to a file under
``DATA_DIR/spool`` (append, flush, fsync: on disk before the 202) and a mover
thread puts it into Redis once it is back.

* **One file per web process** (``spool-<pid>-<token>.jsonl``), held under an
  exclusive ``flock`` for the process's life. A file whose writer died (its lock
  is free) is taken over by any web process of the container when it next runs.
* **Order.** A process's events are moved in the order they were written, and
  while its spool is not empty new events are spooled behind them. Messages are
  put into their conversation's queue *by Chatwoot message id* (ids grow within
  a conversation), so messages spooled by two processes or two containers at
  once (a deploy overlap) come out in order, and before messages queued
  directly since Redis came back.
* **Exactly once.** A file is deleted only after every line was moved; a
  process killed in the middle leaves the whole file, and moving a line twice
  is harmless: the enqueue script's de-duplication markers drop the repeat.
* **Bounded.** Beyond ``SPOOL_MAX_BYTES`` (all files of the directory) the
  webhook answers 500 again: nothing is accepted that is not durable.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MOVE_INTERVAL_SECONDS", "Spool", "SpoolFull"]

log = logging.getLogger(__name__)
MOVE_INTERVAL_SECONDS = 0.5
PREFIX, SUFFIX = "spool-", ".jsonl"


class SpoolFull(OSError):
    """The spool holds SPOOL_MAX_BYTES already."""


class Spool:
    """This process's spool file, and the mover that empties every spool file it can lock."""

    def __init__(self, data_dir: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(data_dir) / "spool"
        self._max_bytes = max_bytes
        self._lock = threading.RLock()  # appends and the move of our own file
        self._handle: Any = None
        self._path: Path | None = None
        self._count = 0  # lines in our file
        self._mover: threading.Thread | None = None

    # -- writing -------------------------------------------------------------------

    def append(self, entry: dict[str, Any]) -> None:
        """Make ``entry`` durable on disk (raises ``SpoolFull`` or ``OSError``)."""
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._used_bytes() + len(line) > self._max_bytes:
                raise SpoolFull(f"the local spool holds SPOOL_MAX_BYTES={self._max_bytes} already")
            handle = self._own_file()
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
            self._count += 1

    def backlog(self) -> int:
        """Events in this process's spool, not yet moved into Redis."""
        return self._count

    def waiting_files(self) -> list[Path]:
        try:
            return sorted(
                p for p in self.directory.iterdir() if p.name.startswith(PREFIX) and p.suffix == ".jsonl"
            )
        except FileNotFoundError:
            return []

    def _used_bytes(self) -> int:
        total = 0
        for path in self.waiting_files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def _own_file(self) -> Any:
        if self._handle is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
            handle = open(path, "ab")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._handle, self._path, self._count = handle, path, 0
            log.warning("Redis unreachable: spooling accepted webhooks to %s", path)
        return self._handle

    # -- moving --------------------------------------------------------------------

    def move(self, deliver: Callable[[dict[str, Any]], None]) -> int:
        """Deliver every spooled entry this process can take, file by file, in order.
        ``deliver`` raises (a Redis error) to stop; the file then stays for the next
        try. Returns the entries delivered."""
        moved = 0
        with self._lock:
            if self._path is not None and self._count:
                moved += self._move_file(self._path, deliver)
                self._handle.close()
                self._path.unlink(missing_ok=True)
                self._handle = self._path = None
                self._count = 0
        for path in self.waiting_files():
            if path == self._path:
                continue
            moved += self._move_orphan(path, deliver)
        return moved

    def _move_orphan(self, path: Path, deliver: Callable[[dict[str, Any]], None]) -> int:
        """A file whose writer is gone (its lock is free): take it, move it, delete it."""
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return 0
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live process writes it; it moves its own
            moved = self._move_file(path, deliver)
            path.unlink(missing_ok=True)
            log.warning("spool of a stopped process moved into Redis file=%s entries=%d", path.name, moved)
            return moved

    @staticmethod
    def _move_file(path: Path, deliver: Callable[[dict[str, Any]], None]) -> int:
        moved = 0
        with open(path, "rb") as lines:
            for raw in lines:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    log.error("unreadable spool line skipped file=%s", path.name)  # a torn last write
                    continue
                deliver(entry)
                moved += 1
        return moved

    def start_mover(self, ready: Callable[[], bool], deliver: Callable[[dict[str, Any]], None]) -> None:
        """Move the spool into Redis as soon as ``ready()`` says Redis answers (a thread
        that ends when nothing is left; started again by the next append)."""
        with self._lock:
            if self._mover is not None and self._mover.is_alive():
                return
            self._mover = threading.Thread(
                target=self._run, args=(ready, deliver), daemon=True, name="spool-mover"
            )
            self._mover.start()

    def _run(self, ready: Callable[[], bool], deliver: Callable[[dict[str, Any]], None]) -> None:
        while self._count or self.waiting_files():
            time.sleep(MOVE_INTERVAL_SECONDS)
            try:
                if not ready():
                    continue
                moved = self.move(deliver)
            except Exception as exc:  # Redis went away again mid-move: the files stay; try later
                log.warning("spool not moved yet error=%s", type(exc).__name__)
                continue
            if moved:
                log.warning("spool moved into Redis entries=%d", moved)
