"""The Celery worker: ``celery -A app.worker worker -B``.

Runs without a Flask app. Settings are read and validated at import (a bad
value stops the worker with a message naming the variable); Redis and HTTP
clients are made once per worker process (``Runtime``) and passed in.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from functools import cached_property

import click
import redis
from celery import bootsteps, signals

from app.bots import Bot, load_handler, make_bot
from app.bots.transcribe import Transcriber
from app.celery_config import DRAIN_TASK, make_celery, sessions_interval
from app.chatwoot.client import Replier, make_replier
from app.chatwoot.messages import read_stored
from app.conversation.follow_ups import send_due
from app.conversation.sessions import expire_idle_sessions
from app.drain import Drainer
from app.logs import configure_logging
from app.ops.queries import refresh_gauges
from app.schedule.dispatcher import Dispatcher
from app.schedule.housekeeping import Periodic
from app.schedule.lease import stuck_runs
from app.schedule.sweeper import sweep
from app.settings import Settings, load_settings
from app.store import keys
from app.store.client import connect, redis_now, trouble, wait_for_room
from app.store.scripts import Scripts

__all__ = ["celery", "runtime"]

log = logging.getLogger(__name__)
settings = load_settings()
for _served in settings.served():
    if _served.bot_handler and _served.bot_backend == "python":
        load_handler(_served.bot_handler)  # a handler that cannot be imported stops the worker here
celery = make_celery(settings)
HEARTBEAT_INTERVAL_SECONDS = 2.0
MORE_PER_TASK, MORE_SECONDS = 50, 2.0  # further due conversations one drain task may take
NOTICE_TIMEOUT_SECONDS = 5.0


class Runtime:
    """Clients of one worker process, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._bots: dict[tuple[str, int | None], Bot] = {}
        self._transcribers: dict[str, Callable[[str, float], str]] = {}
        self._repliers: dict[tuple[str, bool], Replier] = {}  # (company, for notices) -> client

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings.redis_url)

    @cached_property
    def scripts(self) -> Scripts:
        return Scripts(self.redis)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.redis, self.scripts, celery, self.settings)

    def bot(self, company: str, inbox: int | None = None) -> Bot:
        """The bot of a company, or of one of its inboxes (COMPANIES_FILE "inboxes")."""
        of_company = self.settings.companies[company]
        key = (company, inbox if inbox in of_company.inboxes else None)
        if key not in self._bots:
            config = of_company.for_inbox(key[1])
            self._bots[key] = make_bot(config, self.redis, self.settings.outbound_retries)
        return self._bots[key]

    def transcriber(self, company: str) -> Callable[[str, float], str] | None:
        """The company's voice-note transcription (TRANSCRIBE_BACKEND=openai), or None (none;
        chatwoot: Chatwoot's own transcripts, which the drainer waits for)."""
        config = self.settings.companies[company]
        if config.transcribe_backend != "openai":
            return None
        if company not in self._transcribers:
            self._transcribers[company] = Transcriber(config).transcribe
        return self._transcribers[company]

    def replier(self, company: str, notice: bool = False) -> Replier:
        """The company's Chatwoot client; ``notice``: for best-effort notices (session
        expired), one short attempt and no retries, so that a slow or absent Chatwoot
        cannot hold the worker that drains conversations."""
        if (company, notice) not in self._repliers:
            config = self.settings.companies[company]
            timeout = self.settings.chatwoot_timeout_seconds
            self._repliers[company, notice] = make_replier(
                config,
                self.redis,
                timeout=min(NOTICE_TIMEOUT_SECONDS, timeout) if notice else timeout,
                retries=0 if notice else self.settings.outbound_retries,
            )
        return self._repliers[company, notice]


runtime = Runtime(settings)


def _inbox_of(company: str, conversation: str) -> int | None:
    """The inbox of a conversation, from its oldest waiting message (a conversation
    belongs to one inbox): which inbox's bot and window serve it."""
    client = runtime.redis
    raw = client.lindex(keys.processing(company, conversation), 0) or client.lindex(
        keys.queue(company, conversation), 0
    )
    message = read_stored(raw)
    return message.inbox_id if message else None


def _drain_one(company: str, conversation: str, task_id: str) -> str:
    config = settings.company(company)
    if config is None:
        log.error("drain for unknown company=%s conversation=%s", company, conversation)
        return "unknown-company"
    inbox = _inbox_of(company, str(conversation)) if config.inboxes else None
    drainer = Drainer(
        client=runtime.redis,
        scripts=runtime.scripts,
        settings=settings,
        company=config.for_inbox(inbox),
        conversation=str(conversation),
        task_id=task_id,
        bot=runtime.bot(company, inbox),
        transcribe=runtime.transcriber(company),
        replier=runtime.replier(company),
    )
    outcome = drainer.run()
    log.info(
        "drain done company=%s conversation=%s task=%s outcome=%s", company, conversation, task_id, outcome
    )
    return outcome


@celery.task(name=DRAIN_TASK, bind=True, acks_late=True)
def drain(self, company: str, conversation: str) -> str:  # type: ignore[no-untyped-def]
    """Drain the conversation this task was dispatched for; then, while the worker is
    this busy anyway, claim further due conversations and drain them in the same task
    (at most ``MORE_PER_TASK`` or ``MORE_SECONDS``): no round trip through the broker."""
    dispatcher = runtime.dispatcher
    dispatcher.task_started()
    try:
        outcome = _drain_one(company, conversation, self.request.id)
        started = time.monotonic()
        for _ in range(MORE_PER_TASK):
            if time.monotonic() - started > MORE_SECONDS:
                break
            claims, _ = dispatcher.claim(limit=1)
            if not claims:
                break
            _drain_one(claims[0].company, claims[0].conversation, claims[0].task_id)
        return outcome
    finally:
        dispatcher.task_finished()


def housekeeping() -> list[Periodic]:
    """The periodic work of a worker (app.schedule.housekeeping): the sweeper, the gauges, sessions."""
    return [
        Periodic(
            "sweeper",
            settings.sweep_interval_seconds,
            lambda: sweep(runtime.redis, runtime.scripts, celery, settings),
        ),
        Periodic(
            "gauges",
            settings.gauges_interval_seconds,
            lambda: refresh_gauges(runtime.redis, settings.companies),
        ),
        Periodic(
            "follow-ups",
            settings.sweep_interval_seconds,
            lambda: send_due(
                runtime.redis,
                runtime.scripts,
                settings,
                lambda company: runtime.replier(company, notice=True),
                runtime.bot,
            ),
        ),
        Periodic(
            "session-expiry",
            sessions_interval(settings),
            lambda: expire_idle_sessions(
                runtime.redis,
                runtime.scripts,
                settings,
                lambda company: runtime.replier(company, notice=True),
            ),
        ),
    ]


class Housekeeping(bootsteps.StartStopStep):
    """``--housekeeping`` (the default; ``--no-housekeeping`` leaves it to other workers)."""

    def __init__(self, worker: object, housekeeping: bool = True, **options: object) -> None:
        self.enabled = bool(housekeeping)
        super().__init__(worker, **options)

    def start(self, worker: object) -> None:
        for job in housekeeping():
            job.start()


celery.user_options["worker"].add(
    click.Option(
        ("--housekeeping/--no-housekeeping",),
        default=True,
        help="Run the sweeper, the gauges and session expiry on threads of this worker.",
    )
)
celery.steps["worker"].add(Housekeeping)


def _heartbeat_loop(name: str) -> None:
    """The worker's heartbeat (for /readyz and /metrics), and whether one of its runs is
    stuck past RUN_MAX_SECONDS (then /readyz answers 503 while it stays stuck)."""
    client = connect(settings.redis_url)
    while True:
        try:
            now = redis_now(client)  # one clock for every process: Redis's
            stuck = stuck_runs()
            pipe = client.pipeline(transaction=False)
            pipe.zadd(keys.worker_heartbeats(), {name: now})
            pipe.zremrangebyscore(keys.worker_heartbeats(), "-inf", now - 3600)
            if stuck:
                pipe.zadd(keys.workers_stuck(), {name: now})
            else:
                pipe.zrem(keys.workers_stuck(), name)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("worker heartbeat not written: %s", trouble(exc))
        time.sleep(HEARTBEAT_INTERVAL_SECONDS)


def _pool_size(consumer: object) -> int:
    """The worker's pool size, as the ready signal's sender (the consumer) knows it."""
    controller = getattr(consumer, "controller", None)
    size = getattr(controller, "concurrency", None) or getattr(getattr(consumer, "pool", None), "limit", None)
    return max(1, int(size or 1))


@signals.worker_init.connect
def _wait_for_room(**_: object) -> None:
    """A Redis at its memory ceiling refuses Celery's own start-up writes (kombu's
    restore mutex): the worker would die, and its container restart into the same
    full Redis. It waits for room instead, while /readyz says why."""
    wait_for_room(runtime.redis)


@signals.worker_ready.connect
def _start_heartbeat(sender=None, **_: object) -> None:  # type: ignore[no-untyped-def]
    name = getattr(sender, "hostname", None) or socket.gethostname()
    log.info("worker ready pool_size=%d", _pool_size(sender))
    threading.Thread(target=_heartbeat_loop, args=(name,), daemon=True, name="worker-heartbeat").start()
    runtime.dispatcher.capacity = _pool_size(sender)
    runtime.dispatcher.start()  # every worker process dispatches; claims are atomic


@signals.worker_shutting_down.connect
def _forget_heartbeat(**_: object) -> None:
    try:
        runtime.redis.zrem(keys.worker_heartbeats(), socket.gethostname())
    except redis.RedisError:
        pass


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    configure_logging(settings.log_level, settings.log_format)
