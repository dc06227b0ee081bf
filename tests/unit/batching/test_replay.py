"""The simulator's engine (app.batching.simulate): conversations played turn by turn, the timeline set
by the policy as it is live, and logged turns splitting bursts when the log is replayed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from app.batching.analytics import TURN, bursts_of
from app.batching.pace import MARGIN, SLACK
from app.batching.simulate import Learned, Policy, Turn, Visit, company_policy, converse


@dataclass(frozen=True)
class F:
    at: float
    reading: str = "complete"
    attachment: str | None = None


def chat(*turns: tuple[float, Sequence[float]]) -> Visit:
    """A visit at 1000 s: (think, fragment offsets) per turn."""
    return Visit(1000.0, [Turn(think, [F(at) for at in offsets]) for think, offsets in turns])


def test_each_turn_begins_after_the_answer_to_the_one_before() -> None:
    """A fixed 3 s window and a 2 s bot: the answer comes 5 s after a question; the
    contact's next question 1.5 s after that; its window is 3 s again, every turn."""
    times: list[float] = []

    class Watched(Policy):
        def __init__(self) -> None:
            self.fixed = company_policy("fixed", 3.0, 3.0, 30.0, 30.0, 10.0)

        def close(self, queued: Sequence[F]) -> float:  # type: ignore[override]
            return self.fixed.close(queued)

        def observe(self, batch) -> None:  # type: ignore[no-untyped-def]
            times.extend(f.at for f in batch)

    result = converse([[chat((0.0, [0.0]), (1.5, [0.0]), (1.5, [0.0]))]], Watched(), bot_seconds=2.0)
    assert times == [1000.0, 1006.5, 1013.0]
    assert result.single_waits == [3.0, 3.0, 3.0]
    assert result.single_waits_by_turn == {1: [3.0], 2: [3.0], 3: [3.0]}
    assert (result.messages, result.pairs, result.batches) == (3, 0, 3)


class Blind(Learned):
    """The learned window as it was before invariant 12: never told of an answer."""

    def turn(self, at: float) -> None:
        pass


def test_a_window_that_learns_from_turn_gaps_grows_turn_after_turn_and_the_gateways_does_not() -> None:
    """The feedback loop of issue 23, in the simulator: each turn's gap held the last
    window plus the bot's time plus the contact's reply, so a blind pace widens the next
    window; the pace told of every answer keeps the shortest one."""
    visit = chat(*[(0.5, [0.0])] * 5)
    blind = converse([[visit]], Blind(prior=3.0, max_wait=30.0), bot_seconds=0.0)
    told = converse([[visit]], Learned(prior=3.0, max_wait=30.0), bot_seconds=0.0)
    assert told.single_waits == [3.0] * 5
    # 3, then 1.5 x (the last window + 0.5 s) + 0.5 s: 5.75, 9.9, 16.1, 25.3 s (the table)
    assert blind.single_waits == pytest.approx([3.0, 5.75, 9.875, 16.0625, 25.34375])


def test_fragments_arriving_while_the_bot_thinks_join_its_call_at_most_twice() -> None:
    """The drainer's supersede: the batch closed after 3 s; fragments within the bot's
    time join it (the bot is asked again), twice at most; the answer comes after the last
    call; then the next fragment is a batch of its own."""
    visit = chat((0.0, [0.0, 4.0, 7.0, 10.0, 20.0]))
    result = converse([[visit]], company_policy("fixed", 3.0, 3.0, 30.0, 30.0, 10.0), bot_seconds=4.0)
    # closes at 3 (0); asked again at 7 with 4.0 (joined); again at 11 with 7.0 and 10.0; 20.0
    # alone: four bot calls, two answers
    assert (result.pairs, result.merged, result.batches) == (4, 3, 4)


def test_no_fragment_joins_a_call_about_an_attachment() -> None:
    visit = Visit(0.0, [Turn(0.0, [F(0.0, "plain", "image"), F(4.0)])])
    result = converse([[visit]], company_policy("fixed", 3.0, 3.0, 30.0, 30.0, 10.0), bot_seconds=4.0)
    assert (result.merged, result.batches) == (0, 2)


def test_a_burst_window_covers_the_rest_of_a_turn() -> None:
    """The learned window after a 4 s gap is 1.5 x 4 + 0.5: the third fragment, 5 s later,
    is merged; the turn's end waited that long."""
    visit = chat((0.0, [0.0, 4.0, 9.0]))
    result = converse([[visit]], Learned(prior=6.0, max_wait=30.0), bot_seconds=1.0)
    assert (result.pairs, result.merged, result.batches) == (2, 2, 1)
    assert result.end_waits == [pytest.approx(MARGIN * 5.0 + SLACK)]


def test_history_is_played_but_not_measured() -> None:
    old, new = chat((0.0, [0.0, 2.0]), (3.0, [0.0, 1.0])), Visit(100_000.0, [Turn(0.0, [F(0.0)])])
    result = converse([[new]], Learned(prior=6.0, max_wait=30.0), 1.0, history=[[old]])
    assert (result.messages, result.pairs) == (1, 0)
    assert result.single_waits == [pytest.approx(MARGIN * 2.0 + SLACK)]
    # without the history, the contact is new: the prior
    assert converse([[new]], Learned(prior=6.0, max_wait=30.0), 1.0).single_waits == [6.0]


def test_logged_turns_split_bursts() -> None:
    """The fragment log keeps a marker where an answer went out: two messages 4 s apart with
    the gateway's answer between are two bursts, not a same-burst pair."""
    logged = [F(0.0), F(3.5, TURN), F(4.0), F(5.0), F(200.0)]
    assert [[f.at for f in b] for b in bursts_of(logged)] == [[0.0], [4.0, 5.0], [200.0]]
    assert [[f.at for f in b] for b in bursts_of([F(0.0), F(4.0)])] == [[0.0, 4.0]]
