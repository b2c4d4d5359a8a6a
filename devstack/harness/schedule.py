"""Timer trigger schedules: NCRONTAB expressions (seconds first, UTC) and TimeSpan intervals."""

from __future__ import annotations

import calendar
import datetime as dt

from devstack.harness.host_json import parse_timespan

_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {name.upper(): (i + 1) % 7 for i, name in enumerate(calendar.day_abbr)}
# second, minute, hour, day of month, month, day of week (0 = Sunday; 7 also means Sunday)
_CRON_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}), (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 7, _DAYS),
)


def _parse_cron_field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    def value(token: str) -> int:
        number = names.get(token.upper()) if names else None
        number = int(token) if number is None else number
        if not low <= number <= high:
            raise ValueError(f"{token!r} is outside {low}-{high}")
        return number

    result: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in {part!r}")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = value(first), value(last)
        else:
            start = value(base)
            # "5/10" means every 10 from 5, as in NCrontab.
            end = high if step_text else start
        result.update(range(start, end + 1, step))
    return frozenset(result)


class CronSchedule:
    """A minimal NCRONTAB schedule (6 fields, seconds first; 5 fields assume second 0), in UTC."""

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) == 5:
            fields.insert(0, "0")
        if len(fields) != 6:
            raise ValueError(f"NCRONTAB needs 6 fields (second first): {expression!r}")
        self.expression = expression
        parsed = [_parse_cron_field(f, *spec) for f, spec in zip(fields, _CRON_FIELDS, strict=True)]
        self.seconds, self.minutes, self.hours, self.days, self.months = (sorted(p) for p in parsed[:5])
        self.weekdays = frozenset(d % 7 for d in parsed[5])

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """Return the first occurrence strictly after ``after`` (an aware datetime)."""
        start = after.astimezone(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        day = start.date()
        for _ in range(366 * 8):  # leap-day schedules can be four years apart
            if day.month in self.months and day.day in self.days and (day.isoweekday() % 7) in self.weekdays:
                found = self._first_time_on(day, start)
                if found is not None:
                    return found
            day += dt.timedelta(days=1)
        raise ValueError(f"schedule {self.expression!r} never fires")

    def _first_time_on(self, day: dt.date, start: dt.datetime) -> dt.datetime | None:
        today = day == start.date()
        for hour in self.hours:
            if today and hour < start.hour:
                continue
            for minute in self.minutes:
                if today and (hour, minute) < (start.hour, start.minute):
                    continue
                for second in self.seconds:
                    if today and (hour, minute, second) < (start.hour, start.minute, start.second):
                        continue
                    return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=dt.UTC)
        return None


class IntervalSchedule:
    """A TimeSpan timer schedule (``hh:mm:ss``), which the host also accepts."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.interval = dt.timedelta(seconds=parse_timespan(expression))

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """Return ``after`` plus the interval."""
        return after + self.interval


def parse_schedule(expression: str) -> CronSchedule | IntervalSchedule:
    """Parse a timer trigger schedule: NCRONTAB, or a TimeSpan when it contains ``:``."""
    return IntervalSchedule(expression) if ":" in expression else CronSchedule(expression)
