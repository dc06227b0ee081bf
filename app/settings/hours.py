"""Business hours: when the humans are in, and so when the bot speaks (BOT_HOURS).

``BUSINESS_HOURS`` is a list of weekday ranges with opening times, in the
company's time zone (``BUSINESS_HOURS_TZ``, an IANA name; UTC by default)::

    mon-fri 09:00-18:00, sat 09:00-13:00

Days are ``mon tue wed thu fri sat sun``, alone or as a range (``fri-mon``
wraps); times are ``HH:MM``, the end after the start (``24:00`` for midnight).
``BOT_HOURS`` says when the bot answers: ``always`` (the default), ``outside``
business hours (the humans answer inside them) or ``inside`` them. A batch the
bot does not answer is left to the humans; outside hours ``AWAY_MESSAGE`` is
sent once per conversation until the next opening.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BusinessHours", "local_time", "parse_business_hours", "parse_time_zone"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENTRY = re.compile(r"^([a-z]{3})(?:-([a-z]{3}))?\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class BusinessHours:
    """Opening ranges per weekday (0 = Monday), in minutes since midnight."""

    ranges: tuple[tuple[int, int, int], ...]  # (weekday, start minute, end minute)

    def is_open(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return any(day == local.weekday() and start <= minute < end for day, start, end in self.ranges)

    def next_change(self, local: datetime) -> datetime:
        """The next minute at which ``is_open`` changes (within a week), for how long a
        once-per-period note (the away message) is remembered."""
        now_open = self.is_open(local)
        probe = local.replace(second=0, microsecond=0)
        for _ in range(7 * 24 * 60):
            probe += timedelta(minutes=1)
            if self.is_open(probe) != now_open:
                return probe
        return local + timedelta(days=7)


def _minutes(hours: str, minutes: str, where: str) -> int:
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(f"{where}: {hours}:{minutes} is not a time of day")
    return h * 60 + m


def _days(first: str, last: str | None, where: str) -> list[int]:
    for day in (first, last):
        if day is not None and day not in DAYS:
            raise ValueError(f"{where}: {day!r} is not one of {', '.join(DAYS)}")
    start = DAYS.index(first)
    end = DAYS.index(last) if last else start
    return [(start + i) % 7 for i in range((end - start) % 7 + 1)]


def parse_business_hours(raw: str) -> BusinessHours:
    """``mon-fri 09:00-18:00, sat 09:00-13:00``; ValueError naming the bad entry."""
    ranges = []
    for entry in (e.strip().lower() for e in re.split(r"[,;]", raw)):
        if not entry:
            continue
        match = _ENTRY.match(entry)
        if not match:
            raise ValueError(f"{entry!r} is not like 'mon-fri 09:00-18:00'")
        first, last, h1, m1, h2, m2 = match.groups()
        start, end = _minutes(h1, m1, entry), _minutes(h2, m2, entry)
        if end <= start:
            raise ValueError(f"{entry!r}: the end must come after the start")
        ranges += [(day, start, end) for day in _days(first, last, entry)]
    if not ranges:
        raise ValueError("no opening hours given")
    return BusinessHours(tuple(ranges))


def parse_time_zone(raw: str) -> ZoneInfo:
    try:
        return ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{raw!r} is not an IANA time zone (e.g. America/Sao_Paulo)") from None


def local_time(unix: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(unix, zone)
