"""'Typing…' in the Chatwoot dashboard while the bot thinks.

Shown only once the bot has thought for ``TYPING_DELAY_SECONDS``: a fast answer
needs no indicator (and no two Chatwoot calls) that would flash for a few
milliseconds. The calls go from a small per-process thread pool, never from
the drain's own thread.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from app.chatwoot.client import Replier

__all__ = ["TYPING_DELAY_SECONDS", "Typing"]

TYPING_DELAY_SECONDS = 0.5


_typing: tuple[int, ThreadPoolExecutor] | None = None


def _typing_pool() -> ThreadPoolExecutor:
    """Threads that switch the typing indicator on while the bot thinks (per process)."""
    global _typing
    if _typing is None or _typing[0] != os.getpid():
        _typing = (os.getpid(), ThreadPoolExecutor(max_workers=64, thread_name_prefix="typing"))
    return _typing[1]


class Typing:
    """'Typing…' for one bot call."""

    def __init__(self, replier: Replier, account: int, conversation: str) -> None:
        self._args = (replier, account, conversation)
        self._answered = threading.Event()
        self._shown = False
        self._future = _typing_pool().submit(self._after_delay)

    def _after_delay(self) -> None:
        if not self._answered.wait(TYPING_DELAY_SECONDS):
            self._shown = True
            replier, account, conversation = self._args
            replier.typing(account, conversation, True)

    def settle(self) -> bool:
        """The bot is done: no indicator from now on; wait for one in flight. Was it shown?"""
        self._answered.set()
        wait([self._future], timeout=3)
        return self._shown
