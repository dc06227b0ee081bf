"""The drain's side of who holds a conversation (the rule itself: ``app.conversation.ownership``):
before each bot call, is it still the bot's; a batch left to the humans who hold it;
and the handoff a bot answer (or a gate) asks for."""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.conversation.ownership import Seen
from app.drain.endings import complete
from app.drain.ledger import StoredAnswer
from app.drain.run import Batch, RunContext
from app.errors import ChatwootError
from app.store import keys

__all__ = ["BOT_OPENS", "hand_off", "held_by_humans", "leave_to_humans"]

log = logging.getLogger(__name__)
BOT_OPENS = "open"  # the status a handoff gives the conversation (Chatwoot's toggle_status)


def held_by_humans(ctx: RunContext, batch: Batch) -> bool:
    """Does a human hold the conversation, or is the bot paused by a label (read with
    the claim for the batch's first bot call)? A bot that drafts for the agents
    (BOT_MODE=draft) drafts whoever holds it: only a pause label stops it."""
    if ctx.company.drafts:
        batch.held_by_humans = None
        return bool(ctx.client.exists(ctx.key(keys.paused)))
    if batch.held_by_humans is not None:
        seen, batch.held_by_humans = batch.held_by_humans, None
        return seen
    return bool(ctx.client.exists(ctx.key(keys.handoff), ctx.key(keys.paused)))


def leave_to_humans(ctx: RunContext, raws: list[str]) -> None:
    """A human holds the conversation: the messages are theirs (Chatwoot shows them)."""
    complete(ctx, raws)
    log.info(
        "messages left to humans company=%s conversation=%s messages=%d",
        ctx.company_id,
        ctx.conversation,
        len(raws),
    )


def hand_off(ctx: RunContext, account: int, answer: StoredAnswer) -> None:
    """Humans take over: the marker (lease-checked), then in Chatwoot the bot's note for
    them, the team, and the status ``open``; each best effort, logged."""
    ctx.scripts.batch.mark_handoff(
        ctx.company_id, ctx.conversation, ctx.run_id, ctx.company.handoff_ttl_seconds
    ).run()
    replier, conversation = ctx.replier, ctx.conversation
    steps: list[tuple[str, Callable[[], None]]] = []
    if answer.note:
        steps.append(("note", lambda: replier.add_note(account, conversation, answer.note)))
    if answer.team is not None:
        team = answer.team
        steps.append(("team", lambda: replier.assign_team(account, conversation, team)))
    steps.append(("handoff", lambda: _open(ctx, account)))
    for what, step in steps:
        try:
            step()
        except ChatwootError as exc:
            log.error(
                "%s not sent company=%s conversation=%s error=%s", what, ctx.company_id, conversation, exc
            )
    log.info("conversation handed to humans company=%s conversation=%s", ctx.company_id, conversation)


def _open(ctx: RunContext, account: int) -> None:
    """``toggle_status`` open, and the status recorded as seen: the gateway's own change
    counts like one from Chatwoot, whose ``conversation_opened`` may never arrive (then
    a later ``pending`` is still told apart as a change)."""
    ctx.replier.open_conversation(account, ctx.conversation)
    ctx.scripts.ownership.observe(ctx.company, ctx.conversation, Seen(BOT_OPENS, status_changed=True)).run()
