"""Accepting a message: one atomic Redis step, nothing else.

``accept`` runs the ENQUEUE script: de-duplicate, bound the queue, push the
message (with Redis's clock as its arrival time) and schedule the conversation
at its batch's due time in ``<company>:webhook_due``. The webhook publishes no
Celery task: a dispatcher in the workers (``app.dispatcher``) claims due
conversations. So every webhook costs exactly one EVALSHA.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from app import keys
from app.payload import StoredMessage
from app.scripts import EnqueueResult, Scripts
from app.settings import CompanyConfig, Settings

__all__ = ["Accepted", "accept"]


@dataclass(frozen=True)
class Accepted:
    result: EnqueueResult

    @property
    def new_batch(self) -> bool:
        return self.result.length == 1


def accept(
    client: redis.Redis,
    scripts: Scripts,
    settings: Settings,
    company: CompanyConfig,
    message: StoredMessage,
    delivery_id: str | None,
    ordered: bool = False,
) -> Accepted:
    """Make the message durable in its conversation's queue and schedule the conversation.
    ``ordered``: place it by its Chatwoot id (a message moved in from the local spool)."""
    cid, conv = company.company_id, message.conversation_id
    raw = scripts.enqueue(
        keys=[
            keys.queue(cid, conv),
            keys.lease(cid, conv),
            keys.seen_message(cid, message.id),
            keys.seen_delivery(cid, delivery_id or "-"),
            keys.conversation_index(cid),
            keys.stats(cid),
            keys.handoff(cid, conv),
            keys.sessions(cid),
            keys.session_accounts(cid),
            keys.status(cid, conv),
            keys.due(cid),
        ],
        args=[
            message.open_json(),
            settings.queue_ttl_seconds,
            company.max_queue_per_conversation,
            company.first_window,
            company.batch_max_wait_seconds,
            settings.seen_ttl_seconds,
            conv,
            "1" if delivery_id else "0",
            message.conversation_status or "",
            message.account_id,
            company.status_ttl_seconds,
            str(message.id) if ordered else "",
            company.batch_window_mode,
        ],
        client=client,
    )
    return Accepted(EnqueueResult(str(raw[0]), int(raw[1]), str(raw[2]), float(raw[3])))
