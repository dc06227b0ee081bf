"""The dispatcher: hands due conversations to drain tasks.

The enqueue script schedules each conversation at its batch's due time in
``<company>:webhook_due`` (Redis's clock). A dispatcher thread runs in every
worker process: it looks at the earliest entries, claims the due ones one
script each (``CLAIM_DUE``: the entry removed and the lease taken for a fresh
task in one step, so two dispatchers — two containers in a deploy overlap —
never dispatch a conversation twice) and publishes one drain task per claim,
with no countdown. It sleeps until the earliest due time, at most
``POLL_SECONDS``, so a newly written earlier entry waits no longer than that.

Nothing waits in worker memory: an open batching window is one sorted-set
entry, and a window that slides is the same entry rescored.

A busy worker drains without the broker: a drain task that has finished its
conversation claims the earliest due ones itself (``claim``). So the dispatcher
publishes only for this process's free pool slots: its capacity minus the drain
tasks running here and those it published in the last second that have not
started. A worker whose slots are all taken by slow bot calls leaves due
entries to the other workers' dispatchers (claims are atomic), or to its own
tasks once they are done: in either case no slower than publishing them would be.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import redis
from celery import Celery

from app.schedule.lease import new_task_id, schedule_drain, take_over_if_finished
from app.settings import Settings
from app.store import keys
from app.store.client import trouble
from app.store.scripts import DueClaim, RoundTrip, Scripts

__all__ = ["POLL_SECONDS", "Claim", "Dispatcher"]

log = logging.getLogger(__name__)
POLL_SECONDS = 0.01
LOOK_AHEAD = 200  # the most claimed in one look
PUBLISHED_WINDOW_SECONDS = 1.0  # a published task not started by then is somebody else's


@dataclass(frozen=True)
class Claim:
    company: str
    conversation: str
    task_id: str


class Dispatcher:
    def __init__(self, client: redis.Redis, scripts: Scripts, celery: Celery, settings: Settings) -> None:
        self._client, self._scripts, self._celery, self._settings = client, scripts, celery, settings
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.capacity = 1  # this process's pool size (set when the worker is ready)
        self._running = 0  # drain tasks running in this process
        self._published: deque[float] = deque()  # when each task published here, not started, went out

    def task_started(self) -> None:
        with self._lock:
            self._running += 1
            if self._published:
                self._published.popleft()

    def task_finished(self) -> None:
        with self._lock:
            self._running -= 1

    def free_slots(self) -> int:
        with self._lock:
            cutoff = time.monotonic() - PUBLISHED_WINDOW_SECONDS
            while self._published and self._published[0] < cutoff:
                self._published.popleft()
            return max(0, self.capacity - self._running - len(self._published))

    def _look(self, limit: int) -> tuple[float, list[tuple[str, str, float]]]:
        """(now, [(company, conversation, due)]) of each company's ``limit + 1`` earliest
        entries, earliest first, in one round trip: enough to claim ``limit`` and to know
        whether more are due, or when the next one is."""
        pipe = self._client.pipeline(transaction=False)
        pipe.time()
        companies = list(self._settings.companies)
        for company in companies:
            pipe.zrange(keys.due(company), 0, limit, withscores=True)
        (seconds, micros), *entries = pipe.execute()
        found = [
            (c, conv, float(due)) for c, rows in zip(companies, entries, strict=True) for conv, due in rows
        ]
        return seconds + micros / 1e6, sorted(found, key=lambda entry: entry[2])

    def claim(self, limit: int = LOOK_AHEAD) -> tuple[list[Claim], float | None]:
        """Claim up to ``limit`` due conversations, the earliest first (their leases name
        the returned task ids); and the seconds until the next entry is due (None when
        none is waiting, 0 when more is due than claimed)."""
        if limit <= 0:
            return [], None
        now, entries = self._look(limit)
        ready = [e for e in entries if e[2] <= now]
        due = ready[:limit]
        later = [e[2] - now for e in entries if e[2] > now]
        if not due:
            return [], min(later, default=None)
        ttl_ms = int(self._settings.lease_ttl_seconds * 1000)
        batch = RoundTrip(self._client)
        fresh = [new_task_id() for _ in due]
        for (company, conv, _), task_id in zip(due, fresh, strict=True):
            batch.add(self._scripts.schedule.claim_due(company, conv, task_id, ttl_ms))
        claims = []
        for (company, conv, _), got in zip(due, batch.execute(), strict=True):
            if got.claim is DueClaim.DISPATCHED:
                claims.append(Claim(company, conv, got.holder))
            elif got.claim is DueClaim.HELD and got.holder and got.lease_ms_left < ttl_ms // 2:
                # The holder is more than half a lease late: only then pay for a result lookup.
                take_over_if_finished(
                    self._client, self._scripts, self._celery, company, conv, got.holder, ttl_ms
                )
        if len(ready) > len(due):  # more is due than claimed: look again at once
            return claims, 0.0
        return claims, min(later, default=None)

    def dispatch(self) -> float | None:
        """Claim what is due (for this process's free slots) and
        publish a drain task for each; the seconds until it should look again."""
        claims, wait = self.claim(limit=self.free_slots())
        for claim in claims:
            with self._lock:
                self._published.append(time.monotonic())
            try:
                schedule_drain(self._celery, claim.company, claim.conversation, claim.task_id)
            except Exception:
                # The lease names a task that does not exist: it expires, the sweeper reschedules.
                log.exception(
                    "drain task not published company=%s conversation=%s", claim.company, claim.conversation
                )
        return wait

    def start(self) -> None:
        """The dispatcher thread of this worker process."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, daemon=True, name="dispatcher")
            self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                wait = self.dispatch()
                pause = POLL_SECONDS if wait is None else min(POLL_SECONDS, max(0.0, wait))
            except redis.RedisError as exc:
                log.warning("dispatcher: %s", trouble(exc))
                pause = 1.0
            except Exception:  # the thread must outlive any one failure
                log.exception("dispatch pass failed")
                pause = 1.0
            time.sleep(pause)
