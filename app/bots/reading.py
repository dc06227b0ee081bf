"""Attachments read into text before a batch goes to the bot — a voice note's transcript
(``app.bots.transcribe``), a document's text (``app.bots.documents``) — each kept in the
batch's ledger as ``text:…`` or ``failed:<why>``, so a run of the batch again uses what
the first run found and never fetches, transcribes or pays twice. A failure reaches the
bot too: the attachment carries ``error`` (the request's ``attachments[].error``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from app.chatwoot.messages import Attachment, StoredMessage

__all__ = ["FAILED", "TEXT", "read_attachments"]

TEXT, FAILED = "text:", "failed:"  # a kept result: what the bot gets, or why it gets none


def read_attachments(
    messages: list[StoredMessage],
    wants: Callable[[Attachment], bool],
    read: Callable[[Attachment], str],
    kept: Callable[[int, int], str | None],
    keep: Callable[[int, int, str], None],
    field: str,
) -> list[StoredMessage]:
    """``messages`` with each attachment ``wants`` selects read into its ``field`` (or its
    ``error``): ``kept(message id, index)`` is what an earlier run stored, used as it is;
    else ``read`` (``TEXT`` + text, or ``FAILED`` + why) and ``keep`` it."""
    result = []
    for message in messages:
        attachments = list(message.attachments)
        for index, attachment in enumerate(attachments):
            if not wants(attachment):
                continue
            stored = kept(message.id, index)
            if stored is None:
                stored = read(attachment)
                keep(message.id, index, stored)  # a run of the batch again does what this one did
            if stored.startswith(TEXT) and stored[len(TEXT) :]:
                attachments[index] = dataclasses.replace(attachment, **{field: stored[len(TEXT) :]})
            elif stored.startswith(FAILED):
                attachments[index] = dataclasses.replace(attachment, error=stored[len(FAILED) :][:300])
        changed: tuple[Attachment, ...] = tuple(attachments)
        result.append(
            dataclasses.replace(message, attachments=changed) if changed != message.attachments else message
        )
    return result
