"""Errors that reach the user as one line, with a hint and an exit code."""

from __future__ import annotations


class EzError(Exception):
    """An expected failure: the CLI prints ``message`` (and ``hint``) on one line each,
    never a traceback, and exits with ``exit_code``."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(EzError):
    """Bad input from the user: a missing model, an invalid flag value, a bad file."""

    exit_code = 2
