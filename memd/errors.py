"""One error tree for memd.

Every error memd raises on purpose derives from :class:`MemdError`, so callers
at a layer boundary (the server, the CLI) can translate them in one place.
Messages are lowercase, factual, and name the action an operator must take.
"""

from __future__ import annotations


class MemdError(Exception):
    """Root of every error memd raises deliberately."""


class ConfigError(MemdError):
    """A configuration file or value is invalid.

    ``path`` is the file (or ``"<flags>"`` / ``"<defaults>"``), ``key`` the
    dotted key that is wrong, so the operator can go straight to the line.
    """

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path = path
        self.key = key
        self.message = message
        super().__init__(f"{path}: {key}: {message}")


class ProtocolError(MemdError):
    """The peer sent bytes that are not valid RESP; the connection must close."""


class CommandError(MemdError):
    """A command failed; ``prefix`` is the RESP error code (ERR, WRONGTYPE...)."""

    prefix = "ERR"

    def __init__(self, message: str, prefix: str | None = None) -> None:
        if prefix is not None:
            self.prefix = prefix
        super().__init__(message)


class WrongTypeError(CommandError):
    """A command was applied to a key holding another type (Redis WRONGTYPE)."""

    prefix = "WRONGTYPE"

    def __init__(self, message: str = "Operation against a key holding the wrong kind of value") -> None:
        super().__init__(message)


class WALCorruptError(MemdError):
    """A WAL segment holds a record that fails its checks.

    ``path`` and ``offset`` locate the first bad byte so that ``memd check``
    and the operator can inspect it.
    """

    def __init__(self, path: str, offset: int, message: str) -> None:
        self.path = path
        self.offset = offset
        super().__init__(f"{path} at offset {offset}: {message}")


class StoreError(MemdError):
    """The SQLite store failed or is not in a state memd can use."""


class StoreDamagedError(StoreError):
    """The store's file is corrupt or not a database: retrying will not mend it (a backup will)."""


class DataDirLockedError(MemdError):
    """Another memd process holds the data directory's lock file."""


class OverloadError(CommandError):
    """Writes are refused for now (buffer full, RSS too high); retry later."""

    prefix = "OOM"


class DurabilityError(CommandError):
    """The WAL could not be written or synced; the write was not acknowledged.

    After a failed fsync the engine refuses every further write until restart:
    retrying an fsync can report success for data the kernel already dropped.
    """

    prefix = "MISCONF"


class QueryError(CommandError):
    """A MEM.SEARCH query that FTS5 cannot parse; the reply names the problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid QUERY: {reason}; quote words with \"double quotes\" to search them literally")
