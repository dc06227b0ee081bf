"""What one run of the drain carries from step to step (``RunContext``), and what one
batch does (``Batch``).

The steps of ``app.drain`` are functions of a ``RunContext``: the collaborators the
task built (Redis, the scripts, the company, the bot, the replier), the run's proof
of its lease and its ledger once the lease is taken, and the few things a run
learns as it goes and needs again (when the latest fragment arrived, when the
latest answer went out, the contact's pace)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import redis

from app.batching.pace import Pace
from app.bots import Bot
from app.bots.transcribe import Budget
from app.chatwoot.client import Replier
from app.drain.ledger import Ledger, LedgerState
from app.metrics import Stat
from app.schedule.lease import Run
from app.settings import CompanyConfig, Settings
from app.store import keys
from app.store.scripts import Scripts

__all__ = ["Batch", "Claimed", "DrainTask", "RunContext"]


@dataclass
class DrainTask:
    """What the task builds for one delivery of a drain task: the collaborators."""

    client: redis.Redis
    scripts: Scripts
    settings: Settings
    company: CompanyConfig
    conversation: str
    task_id: str
    bot: Bot
    replier: Replier
    clock: Callable[[], float] = time.time  # only for timestamps shown to people (dead letters)
    transcribe: Callable[[str, float], str] | None = None  # TRANSCRIBE_BACKEND (app.bots.transcribe), or none

    def context(self) -> RunContext:
        """A fresh run's context over these collaborators."""
        return RunContext(**{f.name: getattr(self, f.name) for f in fields(DrainTask)})


@dataclass
class RunContext(DrainTask):
    """A run's collaborators, and what it proves and learns as it goes."""

    run_id: str = ""
    run: Run | None = None  # the proof of the lease, once taken (``proven``)
    ledger: Ledger | None = None
    started: float = 0.0  # monotonic start of the run
    previous: float | None = None  # latest arrival counted for gaps
    turn_at: float | None = None  # latest outgoing message (app.batching.pace)
    claimed: bool = False  # this run claimed a batch (counted an attempt)
    _pace: tuple[str, Pace] | None = field(default=None, repr=False)  # read once per contact and run

    @property
    def company_id(self) -> str:
        return self.company.company_id

    def key(self, fn: Callable[[str, str], str]) -> str:
        """The conversation's key of a ``keys`` function (``ctx.key(keys.queue)``)."""
        return fn(self.company_id, self.conversation)

    def proven(self) -> None:
        """Raise ``LeaseLost`` unless the run can prove its lease (a fresh renewal)."""
        assert self.run is not None
        self.run.check()

    def count(self, stat: Stat, amount: int = 1) -> None:
        self.client.hincrby(keys.stats(self.company_id), stat, amount)

    def pace_of(self, subject: str) -> tuple[str, Pace]:
        """The key and pace of ``subject`` (``claim.pace_subject``)."""
        key = keys.pace(self.company_id, subject)
        if self._pace is None or self._pace[0] != key:
            self._pace = (key, Pace.from_json(self.client.get(key)))
        return self._pace

    def learned_pace(self, key: str, pace: Pace) -> None:
        self._pace = (key, pace)


@dataclass(frozen=True)
class Claimed:
    """A batch claimed into ``webhook_processing``: its entries, the attempts before this
    one and the last one's error; read in the same round trip, whether humans hold the
    conversation and what the reply ledger holds."""

    raws: list[str]
    attempts: int
    last_error: str
    held_by_humans: bool
    state: LedgerState


@dataclass
class Batch:
    """One batch as the steps answer it."""

    state: LedgerState
    held_by_humans: bool | None  # read with the claim, for its first bot call only
    raw_of: dict[int, str] = field(default_factory=dict)  # Chatwoot id -> stored entry
    budget: Budget | None = None  # the batch's transcription budget, superseding fragments included
    typing_shown: bool = False  # "typing" went on during this batch
    first_id: int = 0  # the Chatwoot id of its first message: the batch's name in the ledger

    @classmethod
    def of(cls, claimed: Claimed) -> Batch:
        return cls(claimed.state, claimed.held_by_humans)
