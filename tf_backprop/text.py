"""Message text shared by every layer: errors are one line, cell values quoted alike.

Needs the standard library only.
"""

from __future__ import annotations

import json

MAX_SHOWN = 40  # characters of a user's value quoted in a message


def one_line(message: object) -> str:
    """The message with every run of whitespace (newlines included) folded into one space."""
    return " ".join(str(message).split())


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, or the error's type name."""
    lines = (line.strip() for line in str(error).splitlines())
    return next((line for line in lines if line), type(error).__name__)


def quote(value: str, limit: int = MAX_SHOWN) -> str:
    """A user's value quoted for a message: JSON-escaped, on one line, truncated to `limit`."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return json.dumps(text, ensure_ascii=False)


def duration(seconds: float) -> str:
    """A rough duration for a message: "40 s", "12 min", "3 h 20 min"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
