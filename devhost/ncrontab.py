"""NCRONTAB schedules as timer triggers use them: six fields, `second minute hour day month weekday`.

Fields take `*`, numbers, names (Jan, Mon), ranges `a-b`, steps `*/n` and `a-b/n`, and lists.
Like NCrontab, day-of-month and day-of-week must both match. Times are UTC.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high, names whose index + low is the value)
_FIELDS = [(0, 59, None), (0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTHS), (0, 6, _DAYS)]
_NAMES = ["second", "minute", "hour", "day", "month", "day-of-week"]


def _value(text: str, low: int, names: list[str] | None, field: str) -> int:
    if names and text.lower()[:3] in names and not text.isdigit():
        return names.index(text.lower()[:3]) + low
    if not text.isdigit():
        raise ValueError(f"NCRONTAB {field} field: not a number: {text!r}")
    value = int(text)
    return 0 if field == "day-of-week" and value == 7 else value  # 7 = Sunday, as in cron


def _parse_field(text: str, index: int) -> frozenset[int]:
    low, high, names = _FIELDS[index]
    field = _NAMES[index]
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"NCRONTAB {field} field: step must be positive: {part!r}")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _value(a, low, names, field), _value(b, low, names, field)
        else:
            start = _value(body, low, names, field)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ValueError(f"NCRONTAB {field} field: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (naive or aware; the result keeps its tzinfo)."""
        t = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = moment + timedelta(days=366 * 5)
        while t <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            elif t.day not in self.days or (t.isoweekday() % 7) not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ValueError(f"NCRONTAB schedule {self.text!r} never fires")


def parse_schedule(text: str) -> Schedule:
    fields = text.split()
    if len(fields) != 6:
        raise ValueError(f"NCRONTAB schedule needs 6 fields (second minute hour day month weekday): {text!r}")
    parsed = [_parse_field(f, i) for i, f in enumerate(fields)]
    return Schedule(text, *parsed)
