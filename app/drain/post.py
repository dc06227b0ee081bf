"""Posting a stored answer to Chatwoot, part by part, once (invariant 9), and what
follows it: the dead letter of a failed bot or a refused part, the handoff the
answer asks for, and ``complete`` (``post_answer``).

``Poster.post`` walks the parts of an answer the reply ledger holds
(``app.drain.ledger``): a part recorded ``sent`` is skipped; every other is marked
``pending`` in a lease-checked script just before its POST and recorded
``sent:<Chatwoot id>`` just after. A part found ``pending`` was being posted
when a run died: with a token that can read the conversation it is looked up
(the stored text in a message newer than the contact's messages it answers,
ignoring messages already recorded as ours) instead of posted again. A create
whose outcome Chatwoot left unknown (a read timeout, a connection lost
mid-request, a 5xx) is settled the same way, never posted again blindly. With
``REPLY_SPLIT=paragraphs`` a typing pause precedes each further part.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from app.batching.rules import Segment
from app.bots import KeepsTurns
from app.chatwoot.client import Choices, File, Replier
from app.chatwoot.context import MAX_VALUE_CHARS
from app.chatwoot.replies import Part, Rich, Template, part_text, typing_pause
from app.conversation import follow_ups
from app.conversation.own import content_digest
from app.drain.endings import complete, dead_letter
from app.drain.handoff import hand_off
from app.drain.ledger import SENT, Ledger, LedgerState, StoredAnswer, is_pending, is_sent
from app.drain.reply_media import fetch_reply_media
from app.drain.run import Batch, RunContext
from app.drain.window import window_closed, window_note
from app.errors import ChatwootError
from app.metrics import Stat
from app.settings import CompanyConfig, ContextPart
from app.store import keys

__all__ = ["AMBIGUOUS_CREATES", "AMBIGUOUS_SETTLE_SECONDS", "Poster", "batch_poster", "post_answer"]

log = logging.getLogger(__name__)
AMBIGUOUS_SETTLE_SECONDS = 2.0
AMBIGUOUS_CREATES = 3  # creates of one part whose outcome was unknown, each settled by read-back
HOLDING_PREFIX = "hold-"  # the answer id of a batch's holding message (app.drain.answer)


class Poster:
    """Posts one stored answer of one conversation, for one run."""

    def __init__(
        self,
        client: redis.Redis,
        company: CompanyConfig,
        conversation: str,
        replier: Replier,
        ledger: Ledger,
        state: LedgerState,
        proven: Callable[[], None],
    ) -> None:
        self._client, self._company, self.conversation = client, company, conversation
        self.replier, self._ledger, self._state, self._proven = replier, ledger, state, proven
        self.typing_shown = False  # "typing" went on for a pause
        self.window_closed = False  # past WhatsApp's 24-hour window: no free text was posted
        self.template_sent = False  # SERVICE_WINDOW_TEMPLATE went instead
        self.contact_name = ""  # for the template's {name}

    def post(self, account: int, answer: StoredAnswer, after_id: int) -> tuple[int, ChatwootError] | None:
        """Post what is left of ``answer``, the answer to messages up to the Chatwoot id
        ``after_id``; None when every part is posted, else the index of the part
        Chatwoot refused and why (the parts before it are posted)."""
        for index, part in enumerate(answer.parts):
            state = self._state.part(answer.answer_id, index)
            if is_sent(state):
                continue  # posted by a run that died before completing the batch
            if self._window_closed():  # checked before each post: a batch delayed by a backlog too
                return self._outside_window(account, answer, after_id)
            if index and state is None and self._company.reply_split == "paragraphs":
                self._pause_typing(account, part)
            try:
                self._post_part(account, answer.answer_id, index, part, state, after_id)
            except ChatwootError as exc:
                return index, exc
        return None

    def _window_closed(self) -> bool:
        return window_closed(self._client, self._company, self.conversation)

    def _outside_window(
        self, account: int, answer: StoredAnswer, after_id: int
    ) -> tuple[int, ChatwootError] | None:
        """Past the window: SERVICE_WINDOW_TEMPLATE instead of what is left of the answer
        (once, through the ledger, as the answer's part after its last), or, with none,
        nothing posted: ``window_closed`` tells ``post_answer`` to leave a note and hand off."""
        self.window_closed = True
        self._client.hincrby(keys.stats(self._company.company_id), Stat.SERVICE_WINDOW_CLOSED, 1)
        chosen = self._company.service_window_template
        if chosen is None or answer.answer_id.startswith(HOLDING_PREFIX):  # "one moment" can wait
            return None
        text = "\n\n".join(part_text(p) for p in answer.parts)
        params = chosen.render(self.contact_name, text)
        shown = f"[{chosen.name}] {' | '.join(params)}"
        template = Template(chosen.name, chosen.language, chosen.category, params, shown)
        index = len(answer.parts)
        state = self._state.part(answer.answer_id, index)
        if not is_sent(state):
            try:
                self._post_part(account, answer.answer_id, index, template, state, after_id)
            except ChatwootError as exc:
                return index, exc
        self.template_sent = True
        return None

    def _pause_typing(self, account: int, part: Part) -> None:
        """Show 'typing' for a time proportional to the part, like a person would."""
        self.typing_shown = True
        self.replier.typing(account, self.conversation, True)
        time.sleep(typing_pause(part, self._company.typing_chars_per_second))

    def _post_part(
        self, account: int, answer_id: str, index: int, part: Part, state: str | None, after_id: int
    ) -> None:
        """Post one stored reply part once.

        A part found pending was being posted when a run died: if the token can
        read the conversation, the stored text is looked up (ignoring messages
        already recorded as ours) instead of posted again. With a token that
        cannot read, a part found pending is posted again: at most one repeat per
        crash inside a POST.
        """
        if is_pending(state) and state is not None:
            found = self._find_posted(account, part_text(part), after_id)
            if found:
                remembered = self._remembered(part_text(part))
                self._ledger.record_sent(answer_id, index, state, found[0], remembered=remembered)
                self._client.hincrby(keys.stats(self._company.company_id), Stat.REPLIES_RECOVERED, 1)
                log.warning(
                    "reply found already posted conversation=%s: not posting it again", self.conversation
                )
                return
        self._proven()
        content, choices, files = self._outgoing(part)
        pending = self._ledger.mark_pending(answer_id, index, time.time(), content_digest(content))
        self._state.set_part(answer_id, index, pending)
        self._proven()
        template = part.template_params() if isinstance(part, Template) else None
        message_id = self._create(account, content, after_id, choices, files, template)
        self._ledger.record_sent(answer_id, index, pending, message_id, remembered=self._remembered(content))
        self._state.set_part(answer_id, index, f"{SENT}{message_id or ''}")

    def _outgoing(self, part: Part) -> tuple[str, Choices, tuple[File, ...]]:
        """What goes out for ``part``: its text, its choices, its media fetched (what could
        not be fetched is linked at the end of the text instead)."""
        if not isinstance(part, Rich):
            return part_text(part), (), ()
        files, failed = fetch_reply_media(self._company, part.media)
        if failed:
            self._client.hincrby(keys.stats(self._company.company_id), Stat.REPLY_MEDIA_FAILED, len(failed))
        return "\n".join([part.content, *failed]).strip(), part.choices, files

    def _remembered(self, part: str) -> str | None:
        """The part's text for its own-reply marker when a contact's quote of it may be
        shown to the bot (BOT_CONTEXT "quoted"); else nothing is kept."""
        return part[:MAX_VALUE_CHARS] if ContextPart.QUOTED in self._company.bot_context else None

    def _create(
        self,
        account: int,
        part: str,
        after_id: int,
        choices: Choices = (),
        files: tuple[File, ...] = (),
        template: dict[str, Any] | None = None,
    ) -> int | None:
        """POST the part. An outcome Chatwoot left unknown is settled by read-back:
        found, it is done; not found, it is posted again (``AMBIGUOUS_CREATES`` POSTs in
        all); when the token cannot read, the error goes up as ambiguous (the batch is
        dead-lettered rather than risk a second message)."""
        creates = 0
        while True:
            creates += 1
            try:
                return self.replier.create_message(
                    account,
                    self.conversation,
                    part,
                    choices=choices,
                    files=files,
                    private=self._company.drafts,
                    template=template,
                )
            except ChatwootError as exc:
                if not exc.ambiguous:
                    raise
                time.sleep(AMBIGUOUS_SETTLE_SECONDS)  # let a slow create finish before looking
                found = self._find_posted(account, part, after_id)
                if found is None:
                    raise  # cannot tell
                log.warning(
                    "ambiguous reply settled by read-back conversation=%s posted=%s error=%s",
                    self.conversation,
                    bool(found),
                    exc,
                )
                if found:
                    return found[0]
                if creates >= AMBIGUOUS_CREATES:
                    raise ChatwootError(f"{exc} (not created; {creates} tries)", status=exc.status) from exc
            self._proven()

    def _find_posted(self, account: int, part: str, after_id: int) -> list[int] | None:
        """Ids of messages holding ``part`` created after the message ``after_id`` that are
        not already recorded as ours; None when the token cannot read the conversation
        (or the part has no text to look for: media alone)."""
        if not part.strip():
            return None
        found = self.replier.find_replies(account, self.conversation, part, after_id)
        if found is None:
            return None
        ours = self._ledger.ours(found)
        return [m for m in found if m not in ours]


def post_answer(
    ctx: RunContext, batch: Batch, segment: Segment, raws: list[str], answer: StoredAnswer
) -> None:
    """Post the stored answer to ``segment`` (its entries: ``raws``) and end the batch's
    part: completed, handed off as the answer asks, or dead-lettered."""
    assert ctx.ledger is not None and ctx.run is not None
    cid, conversation = ctx.company_id, ctx.conversation
    account = segment.messages[0].account_id
    poster = batch_poster(ctx, batch)
    poster.contact_name = str(segment.messages[0].contact.get("name") or "")
    failed = poster.post(account, answer, after_id=max(m.id for m in segment.messages))
    batch.typing_shown |= poster.typing_shown
    if answer.failure:  # the bot failed: its fallback (if any) is out, the batch is a dead letter
        if failed is not None:
            log.error("fallback not sent company=%s conversation=%s error=%s", cid, conversation, failed[1])
        elif answer.parts:
            ctx.count(Stat.FALLBACKS_SENT)
        dead_letter(ctx, raws, "bot", answer.failure)
        return
    if failed is not None:
        index, exc = failed
        ctx.count(Stat.REPLIES_FAILED)
        dead_letter(ctx, raws, "chatwoot", str(exc), ambiguous=exc.ambiguous, parts_posted=index)
        return
    said = not ctx.company.drafts and not poster.window_closed  # a draft, or past the window: not said
    if answer.by_bot and isinstance(ctx.bot, KeepsTurns) and said:
        said = "\n\n".join(part_text(p) for p in answer.parts)
        ctx.bot.remember(conversation, answer.answer_id, segment.text, said)
    if poster.window_closed and not poster.template_sent:  # no free text past it: the humans decide
        answer = dataclasses.replace(answer, handoff=True, note=window_note(ctx.company, answer.parts))
    if answer.handoff:
        hand_off(ctx, account, answer)
    elif answer.by_bot and said and answer.parts:  # the contact's silence after it is followed up
        first = segment.messages[0]
        follow_ups.schedule(
            ctx.client, ctx.company, conversation, first.inbox_id, account, first.contact, answer.answer_id
        )
    complete(ctx, raws)
    log.info(
        "batch answered company=%s conversation=%s task=%s run=%s messages=%d parts=%d batched=%s",
        cid,
        conversation,
        ctx.task_id,
        ctx.run_id,
        len(raws),
        len(answer.parts),
        segment.batched,
    )


def batch_poster(ctx: RunContext, batch: Batch) -> Poster:
    """The Poster of this run and batch: its ledger state, proving the run's lease."""
    assert ctx.ledger is not None and ctx.run is not None
    return Poster(
        ctx.client, ctx.company, ctx.conversation, ctx.replier, ctx.ledger, batch.state, ctx.run.check
    )
