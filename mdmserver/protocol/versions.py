"""Apple OS versions (``"17.5.1"``) as tuples that compare the way the versions do."""

from __future__ import annotations

import re

#: an OS version as devices report it and administrators write it: up to four dot-separated numbers,
#: each bounded (no number grows without limit), ASCII digits only
VERSION_PATTERN = r"^[0-9]{1,4}(\.[0-9]{1,6}){0,3}$"
_VERSION = re.compile(VERSION_PATTERN)


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """``"17.5.1"`` → ``(17, 5, 1)``, trailing zeros dropped (``"17.0"`` and ``"17"`` are equal); ``None``
    for anything else (an unknown version is never below or above another)."""
    if not text or not _VERSION.match(text.strip()):
        return None
    parts = tuple(int(p) for p in text.strip().split("."))
    while len(parts) > 1 and parts[-1] == 0:
        parts = parts[:-1]
    return parts
