"""Maintenance windows: weekdays and a local start and end time in an IANA time zone (pure)."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_clock(text: str) -> time:
    """``HH:MM`` (24-hour) → a time; ValueError otherwise."""
    hours, sep, minutes = text.partition(":")
    if not sep or len(hours) != 2 or len(minutes) != 2 or not (hours + minutes).isdigit():
        raise ValueError(f"{text!r} is not a time as HH:MM")
    return time(int(hours), int(minutes))


def in_window(window: dict[str, Any] | None, now: datetime) -> bool:
    """Whether ``now`` (aware) falls in the window. ``start`` > ``end`` spans midnight: the window opens
    on each listed weekday at ``start`` and closes the next day at ``end``. No window: always."""
    if not window:
        return True
    local = now.astimezone(ZoneInfo(window["time_zone"]))
    days = {WEEKDAYS.index(day) for day in window["weekdays"]}
    start, end, clock = parse_clock(window["start"]), parse_clock(window["end"]), local.time()
    if start <= end:
        return local.weekday() in days and start <= clock < end
    if clock >= start:
        return local.weekday() in days
    return clock < end and (local.weekday() - 1) % 7 in days
