"""A node's failure as one line: Flower and Ray wrap a ClientApp's exception in tracebacks."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(reason: str, limit: int = 300) -> str:
    """The last line that names an error, printable and at most `limit` characters."""
    lines = [line.strip() for line in _ANSI.sub("", str(reason)).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
    line = (named or lines or ["unknown error"])[-1]
    line = re.sub(r"[^\x20-\x7e]", "?", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."
