"""Replaying batching policies on fragments, in simulated time.

One engine for the two places that ask "what would this window have done?":
the simulator (``bench/batching_quality.py``, on a seeded trace) and the
analytics report (``python -m app analytics``, on the fragments a company's
workers recorded). Each policy closes batches with the gateway's own functions
(``app.batching.rules.close_at``, ``app.batching.pace``, ``app.batching.smart``) and keeps a
contact's pace from batch to batch as the drainer keeps it in Redis; a
fragment arriving after its batch closed starts a new batch.

Two ways to play contacts:

* ``replay``: bursts at fixed times (the analytics' logged fragments, a trace of
  bursts a day apart). Every burst begins after a turn (a silence, or the
  gateway's answer), which the pace is told, as the drainer tells it.
* ``converse``: conversations with **turn-taking**, as people chat: each turn's
  first fragment comes ``think`` seconds after the answer to the turn before, and
  that answer comes when the policy closed the turn's last batch plus the bot's
  time. So the timeline depends on the policy, as it does live, and a policy
  whose window grows turn after turn shows it.

Reported (``Result``): the share of same-burst fragment pairs merged into one
batch, bot calls per 100 messages, the wait added to single-message bursts
(median, p90; and by turn), and the median wait after the last fragment of a
fragmented burst.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.batching.pace import Pace
from app.batching.rules import close_at, due_at
from app.batching.smart import Reading
from app.batching.window import quiet_period
from app.settings import WindowMode

__all__ = [
    "Learned",
    "Policy",
    "Result",
    "Smart",
    "Stateless",
    "Turn",
    "Visit",
    "company_policy",
    "converse",
    "percentile",
    "replay",
]


class Fragment(Protocol):
    @property
    def at(self) -> float: ...

    @property
    def reading(self) -> str: ...


Burst = Sequence[Fragment]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[int(q * (len(ordered) - 1))]


@dataclass
class Result:
    pairs: int = 0
    merged: int = 0
    messages: int = 0
    batches: int = 0  # bot calls: one per batch, and each call a supersede added (``converse``)
    single_waits: list[float] = field(default_factory=list)
    end_waits: list[float] = field(default_factory=list)
    single_waits_by_turn: dict[int, list[float]] = field(default_factory=dict)  # turn number (1-) ->

    def row(self) -> tuple[float, float, float, float, float]:
        """(merged share, bot calls / 100 messages, single p50, single p90, burst end p50)."""
        return (
            self.merged / self.pairs if self.pairs else 0.0,
            100 * self.batches / self.messages if self.messages else 0.0,
            statistics.median(self.single_waits) if self.single_waits else 0.0,
            percentile(self.single_waits, 0.9),
            statistics.median(self.end_waits) if self.end_waits else 0.0,
        )


class Policy:
    """Closes batches; ``observe`` sees each batch when it is claimed; ``turn`` is told
    when an answer went to the contact."""

    def close(self, queued: Sequence[Fragment]) -> float:
        raise NotImplementedError

    def observe(self, batch: Iterable[Fragment]) -> None:
        pass

    def turn(self, at: float) -> None:
        pass

    def new_contact(self) -> None:
        pass


class Stateless(Policy):
    def __init__(self, rule: Callable[[float, float], float]) -> None:
        self.rule = rule

    def close(self, queued: Sequence[Fragment]) -> float:
        return self.rule(queued[0].at, queued[-1].at)


class Paced(Policy):
    """A policy that remembers the contact's pace, as the drainer does in ``<company>:webhook_pace:*``."""

    def __init__(self, prior: float, max_wait: float, low: float = 3.0, high: float = 30.0) -> None:
        self.prior, self.max_wait, self.low, self.high = prior, max_wait, low, high
        self.pace = Pace()
        self.turn_at: float | None = None  # the latest answer to the contact (``app.batching.pace``)

    mode = WindowMode.LEARNED

    def window(self, queued: Sequence[Fragment]) -> float:
        """The quiet period the drainer would choose (``app.batching.window``)."""
        reading = Reading(queued[-1].reading) if self.mode == WindowMode.SMART else Reading.PLAIN
        arrivals = [f.at for f in queued]
        return quiet_period(
            self.mode, self.pace, arrivals, reading, self.prior, self.low, self.high, self.turn_at
        )

    def close(self, queued: Sequence[Fragment]) -> float:
        return close_at(queued[0].at, queued[-1].at, self.window(queued), self.max_wait)

    def observe(self, batch: Iterable[Fragment]) -> None:
        self.pace = self.pace.observe((f.at for f in batch), self.turn_at)

    def turn(self, at: float) -> None:
        self.turn_at = at

    def new_contact(self) -> None:
        self.pace, self.turn_at = Pace(), None


class Learned(Paced):
    mode = WindowMode.LEARNED


class Smart(Paced):
    mode = WindowMode.SMART


def replay(
    contacts: Sequence[Sequence[Burst]], policy: Policy, history: Sequence[Sequence[Burst]] | None = None
) -> Result:
    """Replay each contact's bursts; ``history``: bursts each contact wrote before, which
    only teach the policy (as the stored pace does)."""
    result = Result()
    for index, bursts in enumerate(contacts):
        policy.new_contact()
        for burst in history[index] if history else ():
            policy.turn(burst[0].at)
            policy.observe(burst)
        for burst in bursts:
            policy.turn(burst[0].at)  # a burst begins after a silence or an answer, not mid-gap
            result.messages += len(burst)
            result.pairs += len(burst) - 1
            queued = [burst[0]]
            for fragment in burst[1:]:
                if fragment.at <= policy.close(queued):
                    result.merged += 1
                    queued.append(fragment)
                else:
                    policy.observe(queued)
                    result.batches += 1
                    queued = [fragment]
            wait = max(0.0, policy.close(queued) - burst[-1].at)
            (result.single_waits if len(burst) == 1 else result.end_waits).append(wait)
            policy.observe(queued)
            result.batches += 1
    return result


@dataclass(frozen=True)
class Turn:
    """What a contact writes in one turn: ``fragments`` with ``at`` counted from the turn's
    first fragment (0), written ``think`` seconds after the answer to their turn before."""

    think: float
    fragments: Sequence[Fragment]


@dataclass(frozen=True)
class Visit:
    """One conversation of a contact: ``start`` is when its first turn begins."""

    start: float
    turns: Sequence[Turn]


@dataclass(frozen=True)
class _At:
    """A fragment moved to its time in a played conversation."""

    at: float
    reading: str
    last: float  # when the last fragment of its turn arrives (``Bound``'s knowledge)
    text_only: bool  # no attachment: fragments arriving while the bot thinks may join it


def converse(
    contacts: Sequence[Sequence[Visit]],
    policy: Policy,
    bot_seconds: float,
    history: Sequence[Sequence[Visit]] | None = None,
    supersede_max: int = 2,
) -> Result:
    """Play each contact's visits turn by turn: a turn's fragments merge into a batch while
    the policy keeps it open; a batch is asked of the bot when it closes, and fragments
    that arrive while the bot thinks join it and the bot is asked again (at most
    ``supersede_max`` times, after a text message: the drainer's STORE_ANSWER); the answer
    goes out ``bot_seconds`` after the last call began (the policy is told: a turn); the
    next turn begins ``think`` seconds after the answer to the last batch of the turn
    before. ``history``: visits played first, unmeasured."""
    result = Result()
    for index, visits in enumerate(contacts):
        policy.new_contact()
        for visit in history[index] if history else ():
            _play(visit, policy, bot_seconds, supersede_max, Result())
        for visit in visits:
            _play(visit, policy, bot_seconds, supersede_max, result)
    return result


def _play(visit: Visit, policy: Policy, bot_seconds: float, supersede_max: int, result: Result) -> None:
    answered = visit.start
    for number, turn in enumerate(visit.turns, 1):
        start = visit.start if number == 1 else answered + turn.think
        last = start + turn.fragments[-1].at
        pending = [
            _At(start + f.at, f.reading, last, getattr(f, "attachment", None) is None) for f in turn.fragments
        ]
        result.messages += len(pending)
        result.pairs += len(pending) - 1
        while pending:
            queued = [pending.pop(0)]
            while pending and pending[0].at <= policy.close(queued):
                queued.append(pending.pop(0))
                result.merged += 1
            closed = policy.close(queued)
            if not pending:  # the turn's last fragment waited for this batch to close
                wait = max(0.0, closed - queued[-1].at)
                if len(turn.fragments) == 1:
                    result.single_waits.append(wait)
                    result.single_waits_by_turn.setdefault(number, []).append(wait)
                else:
                    result.end_waits.append(wait)
            policy.observe(queued)  # claimed
            asked, superseded = closed, 0
            while pending and superseded < supersede_max and queued[-1].text_only:
                newer = [f for f in pending if f.at <= asked + bot_seconds]
                if not newer:
                    break
                del pending[: len(newer)]
                result.merged += len(newer)
                if not pending:
                    result.end_waits.append(0.0)  # the turn's last fragment joined a call in flight
                policy.observe(newer)
                queued += newer
                asked, superseded = asked + bot_seconds, superseded + 1
            result.batches += 1 + superseded  # every call the bot got
            answered = asked + bot_seconds
            policy.turn(answered)


def company_policy(
    mode: str, window: float, low: float, high: float, max_wait: float, prior: float
) -> Policy:
    """The policy a company's settings (``BATCH_WINDOW_MODE`` and the rest) describe."""
    if mode in (WindowMode.FIXED, WindowMode.SLIDING):
        return Stateless(lambda first, last: due_at(mode, first, last, window, max_wait))
    return (Smart if mode == WindowMode.SMART else Learned)(prior, max_wait, low, high)
