"""Day numbers and calendar periods."""

from __future__ import annotations

import datetime as dt

_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01 (negative before it)."""
    return day.toordinal() - _EPOCH_ORDINAL


def from_day(day: int) -> dt.date:
    """The date of a day number."""
    return dt.date.fromordinal(day + _EPOCH_ORDINAL)


def ymd(day: dt.date) -> int:
    """The ``YYYYMMDD`` number of a date: the score of dates in sorted sets."""
    return day.year * 10_000 + day.month * 100 + day.day


def from_ymd(value: int | str) -> dt.date:
    """The date of a ``YYYYMMDD`` number."""
    n = int(value)
    return dt.date(n // 10_000, n // 100 % 100, n % 100)


def quarter_of(month: str) -> str:
    """``YYYY-Qn`` of a ``YYYY-MM`` month."""
    return f"{month[:4]}-Q{(int(month[5:7]) - 1) // 3 + 1}"


def round1(value: float) -> float:
    """Rounded to one decimal as Python's ``round`` does (half to even on the binary value)."""
    return round(value, 1)
