"""Errors: DataError, the one-line error that bad data input raises.

Needs the standard library only; every other data module imports it.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad data input; str(e) is ONE line naming the file, line and column where known.

    For example 'data.csv:7:3 (column "x2"): expected a number, got "abc"'.
    """

    def __init__(self, message: str):
        # Callers log or print one line per error; a stray newline (from a file name, say)
        # must not split it.  Only line breaks are folded (not text.one_line's every run of
        # whitespace), so a quoted cell such as "a  b" is shown as it is.
        super().__init__(" ".join(str(message).splitlines()))
