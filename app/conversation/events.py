"""What a webhook that does not reach the bot changes of who holds its conversation
(the rules: ``app.conversation.ownership``; the atomic part: the ownership scripts):
a status or assignment event, a human's reply, the labels that pause the bot."""

from __future__ import annotations

import logging

import redis

from app.chatwoot.messages import AgentReply, StatusChange
from app.conversation.own import content_digest
from app.conversation.ownership import Holder
from app.metrics import Stat
from app.settings import CompanyConfig
from app.store import keys
from app.store.scripts import Scripts, Sender

__all__ = ["on_agent_reply", "on_status", "track_pause_labels"]

log = logging.getLogger(__name__)


def on_status(scripts: Scripts, config: CompanyConfig, parsed: StatusChange) -> str:
    """A conversation event: what it says of the status and assignee is observed, and may
    give the conversation back to the bot or to a human. Returns the webhook's reason."""
    cid, conversation = config.company_id, parsed.conversation_id
    before, after = scripts.ownership.observe(config, conversation, parsed.seen, count_ignored=True).run()
    reason = f"conversation status is now {parsed.status}"
    if after is before:
        return reason
    log.info("conversation holder company=%s conversation=%s now=%r", cid, conversation, after.value)
    if after is Holder.BOT:
        return f"{reason}: the bot answers it again"
    return f"{reason}: {after.value}, the bot is silent in this conversation"


def on_agent_reply(client: redis.Redis, scripts: Scripts, config: CompanyConfig, parsed: AgentReply) -> str:
    """A human's public reply (in Chatwoot, or from the WhatsApp phone): a takeover,
    unless it is the gateway's own reply coming back. Returns the webhook's reason."""
    cid = config.company_id
    digest = content_digest(parsed.content)
    who = scripts.ownership.agent_reply(
        config, parsed.conversation_id, parsed.message_id, digest, parsed.seen
    ).run()
    client.hincrby(keys.stats(cid), Stat.WEBHOOKS_IGNORED, 1)
    if who is Sender.OWN:
        return "the gateway's own reply"
    where = "from the WhatsApp phone" if parsed.via_phone else "in Chatwoot"
    log.info("agent took over company=%s conversation=%s via=%s", cid, parsed.conversation_id, where)
    return f"a human agent replied {where}: the bot is silent in this conversation"


def track_pause_labels(
    client: redis.Redis, config: CompanyConfig, conversation: str, labels: tuple[str, ...] | None
) -> str | None:
    """Keep ``<company>:webhook_paused:<conversation>`` in step with the conversation's
    labels (PAUSE_LABELS): set while it carries one, gone once a webhook shows it
    without. Returns the pausing label, if any. Labels unknown (None): nothing changes."""
    if not config.pause_labels or labels is None:
        return None
    key = keys.paused(config.company_id, conversation)
    label = config.pausing_label(labels)
    if label:
        client.set(key, label, ex=config.status_ttl_seconds)
    else:
        client.delete(key)
    return label
