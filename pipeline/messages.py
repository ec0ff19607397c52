"""One-line errors for the user: their common base, and how a library's exception becomes one line."""

from __future__ import annotations

from pipeline.redact import redact_text


class UserError(Exception):
    """An error whose message is already the one line a user needs (the command line prints it, exit 2)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), else its type's name; a URI's credentials in
    it are replaced by ``***`` (an unreachable server's error names its URI, and the line goes to notes and logs)."""
    lines = str(exc).strip().splitlines()
    return redact_text(lines[0])[:limit] if lines else type(exc).__name__
