"""The Celery app's configuration, and the name of its one task (``DRAIN_TASK``).
Only workers publish: the dispatcher (``app.schedule.dispatcher``) sends a drain task
when a conversation is due.

Why each setting (docs/design.md has the long form):
* ``task_acks_late`` + ``worker_prefetch_multiplier=1``: a task killed mid-run
  is redelivered, not lost; a redelivered task without the lease exits at once.
* ``visibility_timeout`` of 1 h: no task is published with a countdown (due times
  are kept in Redis) and a run ends by RUN_MAX_SECONDS, so an unacknowledged task
  is redelivered only when its worker died. Recovery from a dead worker does not
  wait for it: the lease TTL and the sweeper reschedule the conversation within
  seconds.
* ``result_expires`` of 10 minutes: results only serve the "has this lease
  holder finished?" check, which matters while a lease lives (at most
  BATCH_WINDOW_SECONDS + LEASE_TTL_SECONDS); keeping them longer only costs
  Redis memory.
* Broker connection retried forever, on start-up too: a Redis blip never
  crash-loops the container.
"""

from __future__ import annotations

from celery import Celery

from app.settings import Settings

__all__ = ["DRAIN_TASK", "make_celery", "sessions_interval"]

DRAIN_TASK = "gateway.drain"


def sessions_interval(settings: Settings) -> float:
    """Look for idle sessions four times per the shortest idle limit, 1 to 60 s apart."""
    shortest = min(c.session_idle_minutes * 60 for c in settings.companies.values())
    return min(60.0, max(1.0, shortest / 4))


def make_celery(settings: Settings) -> Celery:
    celery = Celery("gateway", broker=settings.redis_url, backend=settings.redis_url)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": 3600},
        result_backend_transport_options={"visibility_timeout": 3600},
        result_expires=600,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_pool_limit=10,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        # Flower's task list is built from the worker's events (received, started,
        # succeeded...); a task-sent event is a second publish per task for nothing.
        task_send_sent_event=False,
    )
    return celery
