"""One-line errors for the user: their common base, and how a library's exception becomes one line."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message is already the one line a user needs (the command line prints it, exit 2)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), else its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
