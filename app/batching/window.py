"""A contact's quiet period in the paced modes (``learned``, ``smart``): the one place
that says which rule a ``BATCH_WINDOW_MODE`` uses, for the drain (``app.drain.due``)
and the simulator alike."""

from __future__ import annotations

from collections.abc import Iterable

from app.batching.pace import Pace, learned_window
from app.batching.smart import Reading, smart_window
from app.settings import WindowMode

__all__ = ["quiet_period"]


def quiet_period(
    mode: str,
    pace: Pace,
    queued: Iterable[float],
    reading: Reading,
    prior: float,
    low: float,
    high: float,
    turn_at: float | None = None,
) -> float:
    """The quiet period after the latest of the fragments ``queued`` for a contact with
    ``pace`` (``smart`` also reads the latest fragment: ``reading``)."""
    if mode == WindowMode.SMART:
        return smart_window(pace, queued, reading, prior, low, high, turn_at)
    return learned_window(pace, queued, prior, low, high, turn_at)
