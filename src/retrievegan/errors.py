"""Errors raised on bad input: each names the file and the record at fault."""

from __future__ import annotations


class InputError(Exception):
    """Bad input data. The message names the file and, where there is one, the record."""

    def __init__(self, path: object, message: str, record: str | None = None):
        self.path = str(path)
        self.record = record
        where = self.path if record is None else f"{self.path} ({record})"
        super().__init__(f"{where}: {message}")


class ConfigError(Exception):
    """An invalid or inconsistent configuration value."""
