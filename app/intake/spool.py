"""A local durable spool for what the webhook accepts while Redis is unreachable.

Chatwoot never retries an account webhook, and retries an agent-bot delivery
only on 429/500 (three times, 3 s apart) before opening the conversation to
humans: a 500 during a Redis outage loses the message or the conversation. So
while Redis is down the webhook appends each accepted event to a file under
``DATA_DIR/spool`` (append, flush, fsync: on disk before the 202) and a mover
thread puts it into Redis once it is back.

* **One file per web process at a time** (``spool-<pid>-<token>.jsonl``), held
  under an exclusive ``flock`` from before its name is visible (it is created
  under a hidden name, locked, then renamed) until after it is deleted, so
  another process's mover never takes a live file for an orphan. A file whose
  writer died (its lock is free) is taken over by any web process of the
  container when it next runs.
* **Order.** A process's events are moved in the order they were written, and
  while its spool is not empty new events are spooled behind them. Messages are
  put into their conversation's queue *by Chatwoot message id* (ids grow within
  a conversation), so messages spooled by two processes or two containers at
  once (a deploy overlap) come out in order, and before messages queued
  directly since Redis came back.
* **The move never blocks the webhook.** The mover detaches the process's file
  (a few microseconds under the append lock; new events go into a fresh file,
  still behind it) and moves it without that lock.
* **Once.** A file is deleted only after every line was moved; a move that
  stops half way (Redis gone again) resumes after the last line delivered. A
  process killed in the middle leaves the whole file: messages moved twice are
  dropped by the enqueue script's de-duplication markers, and status events
  carry their delivery id for the same purpose.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import GatewayError
from app.logs import Sampled

__all__ = ["MOVE_INTERVAL_SECONDS", "Spool", "SpoolFull"]

log = logging.getLogger(__name__)
_stalled = Sampled(log)
MOVE_INTERVAL_SECONDS = 0.5
PREFIX, SUFFIX = "spool-", ".jsonl"
Deliver = Callable[[dict[str, Any]], None]


class SpoolFull(GatewayError, OSError):
    """The spool holds SPOOL_MAX_BYTES already."""


@dataclass
class _File:
    """One of this process's spool files: open and locked until it is deleted."""

    handle: Any
    path: Path
    lines: int = 0  # lines written
    moved: int = 0  # lines delivered (a move that stopped resumes after them)


class Spool:
    """This process's spool file, and the mover that empties every spool file it can lock."""

    def __init__(self, data_dir: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(data_dir) / "spool"
        self._max_bytes = max_bytes
        self._lock = threading.RLock()  # appends, and detaching the file being written
        self._move_lock = threading.Lock()  # one move at a time in this process
        self._own: _File | None = None  # the file appends go to
        self._detached: list[_File] = []  # earlier files of ours, being moved (oldest first)
        self._mover: threading.Thread | None = None

    # -- writing -------------------------------------------------------------------

    def append(self, entry: dict[str, Any]) -> None:
        """Make ``entry`` durable on disk (raises ``SpoolFull`` or ``OSError``)."""
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._used_bytes() + len(line) > self._max_bytes:
                raise SpoolFull(f"the local spool holds SPOOL_MAX_BYTES={self._max_bytes} already")
            own = self._own_file()
            own.handle.write(line)
            own.handle.flush()
            os.fsync(own.handle.fileno())
            own.lines += 1

    def backlog(self) -> int:
        """Events in this process's spool, not yet moved into Redis."""
        with self._lock:
            files = [*self._detached, *([self._own] if self._own else [])]
            return sum(f.lines - f.moved for f in files)

    def waiting_files(self) -> list[Path]:
        try:
            return sorted(
                p for p in self.directory.iterdir() if p.name.startswith(PREFIX) and p.suffix == SUFFIX
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

    def _own_file(self) -> _File:
        """The file appends go to, made on first use: created under a hidden name,
        locked, and only then given the name movers look for."""
        if self._own is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
            hidden = path.with_name(f".{path.name}.new")
            handle = open(hidden, "ab")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(hidden, path)
                _sync_directory(self.directory)
            except BaseException:
                handle.close()
                hidden.unlink(missing_ok=True)
                raise
            self._own = _File(handle, path)
            log.warning("Redis unreachable: spooling accepted webhooks to %s", path)
        return self._own

    # -- moving --------------------------------------------------------------------

    def move(self, deliver: Deliver) -> int:
        """Deliver every spooled entry this process can take, file by file, in order.
        ``deliver`` raises (a Redis error) to stop; what was not delivered stays for
        the next try. Returns the entries delivered."""
        moved = 0
        with self._move_lock:
            while True:
                with self._lock:  # detach the file being written: appends go on into a new one
                    if self._own is not None and self._own.lines:
                        self._detached.append(self._own)
                        self._own = None
                    if not self._detached:
                        break
                    current = self._detached[0]
                moved += self._move_own(current, deliver)
                with self._lock:
                    self._detached.pop(0)
            mine = {f.path for f in self._detached} | ({self._own.path} if self._own else set())
            for path in self.waiting_files():
                if path not in mine:
                    moved += self._move_orphan(path, deliver)
        return moved

    def _move_own(self, spooled: _File, deliver: Deliver) -> int:
        """Move one of our files from where its last move stopped, then delete it while
        still holding its lock (a mover elsewhere never sees it unlocked)."""
        before = spooled.moved
        for entry in _entries(spooled.path, skip=spooled.moved):
            if entry is not None:
                deliver(entry)
            spooled.moved += 1
        spooled.path.unlink(missing_ok=True)
        spooled.handle.close()
        return spooled.moved - before

    def _move_orphan(self, path: Path, deliver: Deliver) -> int:
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
            if not path.exists():
                return 0  # moved and deleted by another process between our open and lock
            moved = 0
            for entry in _entries(path):
                if entry is not None:
                    deliver(entry)
                    moved += 1
            path.unlink(missing_ok=True)
            log.warning("spool of a stopped process moved into Redis file=%s entries=%d", path.name, moved)
            return moved

    def start_mover(self, ready: Callable[[], bool], deliver: Deliver) -> None:
        """Move the spool into Redis as soon as ``ready()`` says Redis answers (a thread
        that ends when nothing is left; started again by the next append)."""
        with self._lock:
            if self._mover is not None and self._mover.is_alive():
                return
            self._mover = threading.Thread(
                target=self._run, args=(ready, deliver), daemon=True, name="spool-mover"
            )
            self._mover.start()

    def _run(self, ready: Callable[[], bool], deliver: Deliver) -> None:
        while True:
            with self._lock:  # decided under the append lock: an append now starts a new mover
                if not self.backlog() and not self.waiting_files():
                    self._mover = None
                    return
            time.sleep(MOVE_INTERVAL_SECONDS)
            try:
                if not ready():
                    continue
                moved = self.move(deliver)
            except Exception as exc:  # Redis went away again mid-move (or is full): the files stay
                kind = type(exc).__name__  # tried every MOVE_INTERVAL_SECONDS: a line a minute is enough
                _stalled.log(logging.WARNING, kind, "spool not moved yet error=%s", kind)
                continue
            if moved:
                log.warning("spool moved into Redis entries=%d", moved)


def _entries(path: Path, skip: int = 0) -> Any:
    """The entries of a spool file after its first ``skip`` lines; None for a line that
    cannot be read (a torn last write: logged and skipped)."""
    with open(path, "rb") as lines:
        for index, raw in enumerate(lines):
            if index < skip:
                continue
            try:
                yield json.loads(raw)
            except ValueError:
                log.error("unreadable spool line skipped file=%s", path.name)
                yield None


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (its entry, not only the file's data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
