"""Replaying batching policies on fragments, in simulated time.

One engine for the two places that ask "what would this window have done?":
the simulator (``bench/batching_quality.py``, on a seeded trace) and the
analytics report (``python -m app analytics``, on the fragments a company's
workers recorded). Each policy closes batches with the gateway's own functions
(``app.batching.close_at``, ``app.pace``, ``app.smart``) and keeps a
contact's pace from batch to batch as the drainer keeps it in Redis; a
fragment arriving after its batch closed starts a new batch.

Reported (``Result``): the share of same-burst fragment pairs merged into one
batch, bot calls per 100 messages, the wait added to single-message bursts
(median, p90), and the median wait after the last fragment of a fragmented burst.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.batching import close_at, due_at
from app.pace import SAME_BURST_SECONDS, Pace, learned_window
from app.smart import Reading, smart_window

__all__ = [
    "Learned",
    "Policy",
    "Result",
    "Smart",
    "Stateless",
    "bursts_of",
    "company_policy",
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
    batches: int = 0
    single_waits: list[float] = field(default_factory=list)
    end_waits: list[float] = field(default_factory=list)

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
    """Closes batches; ``observe`` sees each batch when it is claimed."""

    def close(self, queued: Sequence[Fragment]) -> float:
        raise NotImplementedError

    def observe(self, batch: Iterable[Fragment]) -> None:
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

    def window(self, queued: Sequence[Fragment]) -> float:
        raise NotImplementedError

    def close(self, queued: Sequence[Fragment]) -> float:
        return close_at(queued[0].at, queued[-1].at, self.window(queued), self.max_wait)

    def observe(self, batch: Iterable[Fragment]) -> None:
        self.pace = self.pace.observe(f.at for f in batch)

    def new_contact(self) -> None:
        self.pace = Pace()


class Learned(Paced):
    def window(self, queued: Sequence[Fragment]) -> float:
        return learned_window(self.pace, [f.at for f in queued], self.prior, self.low, self.high)


class Smart(Paced):
    def window(self, queued: Sequence[Fragment]) -> float:
        reading = Reading(queued[-1].reading)
        return smart_window(self.pace, [f.at for f in queued], reading, self.prior, self.low, self.high)


def replay(
    contacts: Sequence[Sequence[Burst]], policy: Policy, history: Sequence[Sequence[Burst]] | None = None
) -> Result:
    """Replay each contact's bursts; ``history``: bursts each contact wrote before, which
    only teach the policy (as the stored pace does)."""
    result = Result()
    for index, bursts in enumerate(contacts):
        policy.new_contact()
        for burst in history[index] if history else ():
            policy.observe(burst)
        for burst in bursts:
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


def bursts_of(fragments: Iterable[Fragment]) -> list[list[Fragment]]:
    """One contact's fragments, by arrival, cut into bursts at silences over 60 s."""
    bursts: list[list[Fragment]] = []
    for fragment in sorted(fragments, key=lambda f: f.at):
        if bursts and fragment.at - bursts[-1][-1].at <= SAME_BURST_SECONDS:
            bursts[-1].append(fragment)
        else:
            bursts.append([fragment])
    return bursts


def company_policy(
    mode: str, window: float, low: float, high: float, max_wait: float, prior: float
) -> Policy:
    """The policy a company's settings (``BATCH_WINDOW_MODE`` and the rest) describe."""
    if mode in ("fixed", "sliding"):
        return Stateless(lambda first, last: due_at(mode, first, last, window, max_wait))
    return (Smart if mode == "smart" else Learned)(prior, max_wait, low, high)
