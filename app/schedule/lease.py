"""The per-conversation lease: who may drain a conversation, and its heartbeat.

The lease ``<company>:webhook_active_task:<conversation>`` (``keys.lease``)
holds the id of the one Celery task allowed to drain that conversation — once
that task starts, the id of its run (task id + a token, so two deliveries of
one task id are two runs and only one holds) — with a short TTL renewed by the
running task. Its TTL is the liveness signal. ``AsyncResult`` of the id is
consulted only to learn that a holder has *finished*, and only for a holder
that is still a bare task id (a task that never started a run): an id the
backend never heard of and a task killed mid-run read PENDING or STARTED, so a
state can never prove a holder alive; and a task's state says nothing of a run
of it, since the same task id delivered twice is two runs (the second exits at
once and the task reads SUCCESS while the first still drains). A run holder is
left to its lease: renewed while it lives, expired within a TTL once it stops.

**The heartbeat.** A run holds its conversation's lease under its own run id (``new_run_id``:
task id + a random token), so a second delivery of the same task id is a
different run. One thread per process renews every registered run's lease each
quarter TTL in one round trip. A run may act only while it can *prove* its
lease (invariant 10), which takes two things:

* no renewal found the lease taken by someone else (``lost``), and
* a renewal succeeded less than three quarters of a TTL ago: a renewal that
  fails with a Redis error proves nothing, and a process that was paused or cut
  off from Redis wakes up with a stale renewal, whatever Redis says later.

A run also has a maximum duration (``RUN_MAX_SECONDS``): past it the keeper
stops renewing, the lease expires and the sweeper gives the conversation to a
fresh run; the stuck run is reported (``stuck_runs``) so ``/readyz`` turns 503.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

import redis
from celery import Celery
from celery.result import AsyncResult
from celery.states import READY_STATES

from app.celery_config import DRAIN_TASK
from app.errors import LeaseLost
from app.metrics import Stat
from app.store import keys
from app.store.scripts import RoundTrip, Scripts

__all__ = [
    "FRESH_FRACTION",
    "LeaseKeeper",
    "Run",
    "lease_keeper",
    "new_run_id",
    "new_task_id",
    "schedule_drain",
    "stuck_runs",
    "take_over_if_finished",
    "task_of",
]

log = logging.getLogger(__name__)
RUN_SEPARATOR = "#"


def new_task_id() -> str:
    return str(uuid.uuid4())


def schedule_drain(celery: Celery, company: str, conversation: str, task_id: str) -> None:
    """Publish the drain task that the lease already names (at once: due times are kept
    in Redis, ``app.schedule.dispatcher``, never in a countdown)."""
    celery.send_task(DRAIN_TASK, args=[company, conversation], task_id=task_id)


def take_over_if_finished(
    client: redis.Redis,
    scripts: Scripts,
    celery: Celery,
    company: str,
    conversation: str,
    holder: str,
    lease_px: int,
) -> str | None:
    """Take the lease from a published task that has finished without starting a run.

    Returns the new task id (already scheduled) or None when the holder may be
    alive. A run holder (``task#token``) is never taken: its task's state says
    nothing of the run (see the module's docstring); it keeps the lease by
    renewing it. The take-over is a compare-and-set on the holder's id.
    """
    if RUN_SEPARATOR in holder:
        return None
    state = AsyncResult(holder, app=celery).state
    if state not in READY_STATES:  # SUCCESS, FAILURE, REVOKED
        return None
    fresh = new_task_id()
    if not scripts.lease.hand_over(keys.lease(company, conversation), holder, fresh, lease_px).run():
        return None
    client.hincrby(keys.stats(company), Stat.LEASE_TAKEOVERS, 1)
    log.warning(
        "lease taken over company=%s conversation=%s holder=%s state=%s task=%s",
        company,
        conversation,
        holder,
        state,
        fresh,
    )
    schedule_drain(celery, company, conversation, fresh)
    return fresh


FRESH_FRACTION = 0.75  # a renewal older than this share of the TTL no longer proves the lease


def new_run_id(task_id: str) -> str:
    return f"{task_id}{RUN_SEPARATOR}{secrets.token_hex(6)}"


def task_of(holder: str) -> str:
    """The Celery task id of a lease holder (a run id, or a task id not yet started)."""
    return holder.split(RUN_SEPARATOR, 1)[0]


@dataclass
class Run:
    """One run's hold on a lease, as its keeper sees it."""

    lease: str
    run_id: str
    ttl: float
    renewed_at: float  # time.monotonic() when the latest successful renewal was sent
    deadline: float  # time.monotonic() past which the run is no longer renewed
    lost: threading.Event = field(default_factory=threading.Event)
    reported: bool = False

    def proven(self) -> bool:
        return not self.lost.is_set() and time.monotonic() - self.renewed_at < self.ttl * FRESH_FRACTION

    @property
    def overran(self) -> bool:
        """Past ``RUN_MAX_SECONDS``: the run's own doing (a batch that hangs), unlike a
        lease lost to Redis or to another run."""
        return time.monotonic() > self.deadline

    def check(self) -> None:
        """Raise ``LeaseLost`` unless the lease is proven (call before every effect)."""
        if not self.proven():
            raise LeaseLost()


class LeaseKeeper:
    """Renews the leases of every run in this process (one thread, started on first use
    and again in a forked child)."""

    def __init__(self, client: redis.Redis, scripts: Scripts, ttl: float, run_max: float) -> None:
        self._client, self._scripts = client, scripts
        self.ttl, self.run_max = ttl, run_max
        self._interval = ttl / 4
        self._runs: dict[str, Run] = {}  # run id -> run
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def keep(self, lease: str, run_id: str, started: float) -> Run:
        """Renew ``lease`` for ``run_id`` until ``drop``; ``started`` is the monotonic time
        the lease was taken (sent)."""
        run = Run(lease, run_id, self.ttl, renewed_at=started, deadline=started + self.run_max)
        with self._lock:
            self._runs[run_id] = run
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, daemon=True, name="lease-keeper")
                self._thread.start()
        return run

    def drop(self, run: Run) -> None:
        with self._lock:
            self._runs.pop(run.run_id, None)

    def stuck(self) -> list[Run]:
        """Runs still registered past their deadline."""
        now = time.monotonic()
        with self._lock:
            return [r for r in self._runs.values() if now > r.deadline]

    def renew(self) -> None:
        """One pass: renew every live run; stop renewing those past their deadline."""
        with self._lock:
            runs = list(self._runs.values())
        now = time.monotonic()
        live = []
        for run in runs:
            if now <= run.deadline:
                live.append(run)
                continue
            run.lost.set()
            if not run.reported:
                run.reported = True
                log.error(
                    "run past RUN_MAX_SECONDS=%s: heartbeat stopped, the conversation goes to a fresh run"
                    " lease=%s run=%s",
                    self.run_max,
                    run.lease,
                    run.run_id,
                )
        if not live:
            return
        batch = RoundTrip(self._client)
        for run in live:
            batch.add(self._scripts.lease.renew(run.lease, run.run_id, int(self.ttl * 1000)))
        sent = time.monotonic()
        try:
            results = batch.execute()
        except redis.RedisError as exc:
            # Proves nothing: the runs' renewals age until they no longer prove the lease.
            log.warning("lease renewal failed leases=%d error=%s", len(live), type(exc).__name__)
            return
        for run, kept in zip(live, results, strict=True):
            if kept:
                run.renewed_at = max(run.renewed_at, sent)
            else:
                run.lost.set()

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self.renew()
            except Exception:  # the heartbeat of every run in the process: never let it die
                log.exception("lease renewal pass failed")


_keepers: dict[tuple[int, float, float], LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def lease_keeper(client: redis.Redis, scripts: Scripts, ttl: float, run_max: float) -> LeaseKeeper:
    """The process's keeper for this Redis client, lease TTL and run limit."""
    with _keepers_lock:
        key = (id(client), ttl, run_max)
        if key not in _keepers:
            _keepers[key] = LeaseKeeper(client, scripts, ttl, run_max)
        return _keepers[key]


def stuck_runs() -> list[Run]:
    """Runs of this process past their deadline (the worker's heartbeat reports them)."""
    with _keepers_lock:
        keepers = list(_keepers.values())
    return [run for keeper in keepers for run in keeper.stuck()]
