"""The typed layer every script goes through: ``Call`` (one script call with its
KEYS, ARGV and the decoding of its reply), ``RoundTrip`` (commands and calls in one
round trip), and ``render``/``_register`` (a script as Redis gets it).

Every script is called through one method of ``Scripts`` below: the method
builds its KEYS and ARGV (in the order its header documents) and names how its
reply decodes. Scripts that check the run's lease return false when the run no
longer holds it, and ``_held`` turns that into ``LeaseLost``: the one place a
script's answer raises it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from app.conversation.ownership import lua_tables
from app.errors import LeaseLost
from app.metrics import render_counters

__all__ = ["Call", "RoundTrip", "render"]


T = TypeVar("T")


def _held(result: Any) -> Any:
    if result is None:
        raise LeaseLost()
    return result


def _checked(result: Any) -> None:
    _held(result)


def _flag(result: Any) -> bool:
    return bool(result)


def _bit(value: bool) -> str:
    return "1" if value else "0"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One script call, ready to run on its own (``run``) or in a ``RoundTrip``."""

    script: Script
    keys: list[str]
    args: list[Any]
    decode: Callable[[Any], T]

    def run(self) -> T:
        """Run it (EVALSHA on the client the script was registered with)."""
        return self.decode(self.script(keys=self.keys, args=self.args))


def render(source: str) -> str:
    """A script as registered: its ``@counter@`` names rendered from ``app.metrics.Stat``
    and ``@ownership@`` from ``app.conversation.ownership`` (the transition table)."""
    return render_counters(source.replace("@ownership@", _OWNERSHIP_TABLES))


def _register(client: redis.Redis, source: str) -> Script:
    """Register a script as ``render`` makes it."""
    return client.register_script(render(source))


_OWNERSHIP_TABLES = lua_tables()


class RoundTrip:
    """Commands and script calls sent in one round trip (a non-transactional pipeline).

    ``execute`` returns every reply in order, a script's decoded (so a lost
    lease raises ``LeaseLost`` there). redis-py checks ``SCRIPT EXISTS`` before
    every pipeline holding a script — a second round trip. Here a script goes
    as a bare EVALSHA; if Redis lost its script cache (a restart), those calls
    come back NOSCRIPT, did nothing, and go again in one more round trip that
    loads each missing script first.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pipe = client.pipeline(transaction=False)
        self._calls: dict[int, Call[Any]] = {}

    def add(self, call: Call[Any]) -> None:
        self._calls[len(self.pipe)] = call
        self.pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)

    def execute(self) -> list[Any]:
        results = self.pipe.execute(raise_on_error=False)
        missing = [index for index in self._calls if isinstance(results[index], NoScriptError)]
        if missing:  # loaded once each, then those calls again in one more round trip
            again = self.client.pipeline(transaction=False)
            for source in {self._calls[index].script.script for index in missing}:
                again.script_load(source)
            for index in missing:
                call = self._calls[index]
                again.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            replies = again.execute(raise_on_error=False)[-len(missing) :]
            for index, reply in zip(missing, replies, strict=True):
                results[index] = reply
        for result in results:
            if isinstance(result, Exception):
                raise result
        for index, call in self._calls.items():
            results[index] = call.decode(results[index])
        return results
