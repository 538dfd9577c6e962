"""Errors that end a command with a clear one-line message instead of a traceback."""

from __future__ import annotations

from typing import Any


class SignerSyncError(Exception):
    """Base class: ``str(exc)`` is the message shown to the user; ``hint`` says what to do."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(SignerSyncError):
    """A setting is wrong; the message names it. Nothing has been written."""

    exit_code = 2


class DatabaseUnavailable(SignerSyncError):
    """The warehouse cannot be reached; the message names host and port, never the password."""

    exit_code = 2


class SchemaOutOfDate(SignerSyncError):
    """The warehouse is not migrated to the revision this code needs."""

    exit_code = 2
    hint = "run `signer-sync migrate`"


class SyncFailed(SignerSyncError):
    """A sync or backfill did not finish; the watermark was not moved.

    ``report`` is the run's :class:`~signer_sync.sync.RunReport` when the run had started.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, report: Any = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class SourceBusy(SignerSyncError):
    """Another process holds this source's lock."""

    exit_code = 1


def first_line(error: object) -> str:
    """An error's message cut to its first line (its type name when it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
