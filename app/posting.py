"""Posting a stored answer to Chatwoot, part by part, once (invariant 9).

``Poster.post`` walks the parts of an answer the reply ledger holds
(``app.ledger``): a part recorded ``sent`` is skipped; every other is marked
``pending`` in a lease-checked script just before its POST and recorded
``sent:<Chatwoot id>`` just after. A part found ``pending`` was being posted
when a run died: with a token that can read the conversation it is looked up
(the stored text, ignoring messages already recorded as ours) instead of
posted again; the same read-back settles an ambiguous timeout. With
``REPLY_SPLIT=paragraphs`` a typing pause precedes each further part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from app import keys
from app.chatwoot import Replier
from app.errors import ChatwootError
from app.ledger import Ledger, LedgerState, StoredAnswer, is_sent, pending_since
from app.metrics import Stat
from app.replies import typing_pause
from app.sessions import content_digest
from app.settings import CompanyConfig

__all__ = ["AMBIGUOUS_SETTLE_SECONDS", "Poster"]

log = logging.getLogger(__name__)
AMBIGUOUS_SETTLE_SECONDS = 2.0


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

    def post(
        self, account: int, answer: StoredAnswer, clock: Callable[[], float] = time.time
    ) -> tuple[int, ChatwootError] | None:
        """Post what is left of ``answer``; None when every part is posted, else the index
        of the part Chatwoot refused and why (the parts before it are posted)."""
        for index, part in enumerate(answer.parts):
            state = self._state.part(answer.answer_id, index)
            if is_sent(state):
                continue  # posted by a run that died before completing the batch
            if index and state is None and self._company.reply_split == "paragraphs":
                self._pause_typing(account, part)
            try:
                self._post_part(account, answer.answer_id, index, part, state, clock)
            except ChatwootError as exc:
                return index, exc
        return None

    def _pause_typing(self, account: int, part: str) -> None:
        """Show 'typing' for a time proportional to the part, like a person would."""
        self.typing_shown = True
        self.replier.typing(account, self.conversation, True)
        time.sleep(typing_pause(part, self._company.typing_chars_per_second))

    def _post_part(
        self,
        account: int,
        answer_id: str,
        index: int,
        part: str,
        state: str | None,
        clock: Callable[[], float],
    ) -> None:
        """Post one stored reply part once.

        A part found pending was being posted when a run died: if the token can
        read the conversation, the stored text is looked up (ignoring messages
        already recorded as ours) instead of posted again. The same read-back
        settles an ambiguous timeout. With a token that cannot read, a part
        found pending is posted again: at most one repeat per crash inside a POST.
        """
        since = pending_since(state)
        if since is not None and state is not None:
            found = self._find_posted(account, part, since)
            if found:
                self._ledger.record_sent(answer_id, index, state, found[0])
                self._client.hincrby(keys.stats(self._company.company_id), Stat.REPLIES_RECOVERED, 1)
                log.warning(
                    "reply found already posted conversation=%s: not posting it again", self.conversation
                )
                return
        self._proven()
        started = clock()
        pending = self._ledger.mark_pending(answer_id, index, started, content_digest(part))
        self._state.set_part(answer_id, index, pending)
        self._proven()
        message_id = self._create(account, part, started)
        self._ledger.record_sent(answer_id, index, pending, message_id)
        self._state.set_part(answer_id, index, f"sent:{message_id or ''}")

    def _create(self, account: int, part: str, started: float) -> int | None:
        """POST the part; an ambiguous timeout is settled by read-back, else re-raised."""
        try:
            return self.replier.create_message(account, self.conversation, part)
        except ChatwootError as exc:
            if not exc.ambiguous:
                raise
            time.sleep(AMBIGUOUS_SETTLE_SECONDS)  # let a slow create finish before looking
            found = self._find_posted(account, part, started)
            if found is None:
                raise  # cannot tell: dead-letter as ambiguous rather than risk a second message
            log.warning(
                "ambiguous reply settled by read-back conversation=%s posted_again=%s",
                self.conversation,
                not found,
            )
            if found:
                return found[0]
            self._proven()
            return self.replier.create_message(account, self.conversation, part)

    def _find_posted(self, account: int, part: str, since: float) -> list[int] | None:
        """Ids of messages holding ``part`` posted since ``since`` that are not already
        recorded as ours; None when the token cannot read the conversation."""
        found = self.replier.find_replies(account, self.conversation, part, since)
        if found is None:
            return None
        ours = self._ledger.ours(found)
        return [m for m in found if m not in ours]
