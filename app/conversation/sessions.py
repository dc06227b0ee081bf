"""Bot sessions: what the bot remembers of a conversation, and when it forgets.

A session is the openai backend's kept turns plus a handoff the *bot* asked
for. After ``SESSION_IDLE_MINUTES`` without an incoming message a periodic
task clears it and, if ``SESSION_EXPIRED_MESSAGE`` is set, tells the contact
once. The task runs on the same workers as the drains, so one call does at
most ``EXPIRE_BUDGET_SECONDS`` of work (and sends through a replier without
retries): 5,000 sessions expiring together are spread over many calls, and a
drain never waits behind them for more than one slice. A conversation a human
took over (handoff marker ``agent``) stays with the human.
``SESSION_RESET_KEYWORDS`` clears a session on demand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from app.chatwoot.client import Replier
from app.conversation.own import post_own
from app.conversation.ownership import Event, Holder
from app.errors import ChatwootError
from app.metrics import Stat
from app.settings import CompanyConfig, Settings
from app.store import keys
from app.store.scripts import Scripts

__all__ = ["expire_idle_sessions", "reset_session"]

log = logging.getLogger(__name__)
EXPIRE_BATCH = 10
EXPIRE_BUDGET_SECONDS = 1.0


def reset_session(
    client: redis.Redis, scripts: Scripts, company: CompanyConfig, conversation: str, event: Event
) -> Holder:
    """Forget the kept turns and a bot-requested handoff (never a human's: ``event`` is a
    reset keyword or the session's expiry, app.conversation.ownership's table); who holds it now."""
    client.delete(keys.bot_history(company.company_id, conversation))
    # One script: an agent taking over meanwhile keeps the conversation.
    return scripts.ownership.apply_event(
        company.company_id, conversation, event, company.handoff_ttl_seconds
    ).run()


def expire_idle_sessions(
    client: redis.Redis,
    scripts: Scripts,
    settings: Settings,
    replier_for: Callable[[str], Replier],
    budget: float = EXPIRE_BUDGET_SECONDS,
) -> int:
    """Expire sessions idle past their company's limit (by Redis's clock) for at most
    about ``budget`` seconds; return how many. The rest waits for the next call."""
    started = time.monotonic()
    expired = 0
    for company in settings.companies.values():
        while time.monotonic() - started < budget:
            taken = scripts.ownership.expire_sessions(
                company.company_id, company.session_idle_minutes * 60, EXPIRE_BATCH
            ).run()
            for conv, account in taken:
                _expire_one(client, scripts, company, conv, account, replier_for)
                expired += 1
            if len(taken) < EXPIRE_BATCH:
                break
    return expired


def _expire_one(
    client: redis.Redis,
    scripts: Scripts,
    company: CompanyConfig,
    conv: str,
    account: str,
    replier_for: Callable[[str], Replier],
) -> None:
    cid = company.company_id
    human = reset_session(client, scripts, company, conv, Event.SESSION_EXPIRED) is Holder.HUMAN
    client.hdel(keys.last_fragment(cid), conv)  # keeps the gap bookkeeping bounded
    client.hdel(keys.turns(cid), conv)
    client.hincrby(keys.stats(cid), Stat.SESSIONS_EXPIRED, 1)
    log.info("session expired company=%s conversation=%s human=%s", cid, conv, human)
    if human or not company.session_expired_message or not account.isdigit():
        return
    try:
        post_own(client, replier_for(cid), cid, int(account), conv, company.session_expired_message)
    except ChatwootError as exc:
        log.warning("session-expired message not sent company=%s conversation=%s error=%s", cid, conv, exc)
