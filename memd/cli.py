"""The ``memd`` command line.

Every expected failure (a data directory in use, a corrupt file, a bad
config, no daemon on the socket, permission denied, an ``-ERR`` reply) is one
clear line on stderr and a non-zero exit, never a traceback: :func:`main`
maps them all in one place (:func:`describe_error`). Anything else is a bug
and keeps its traceback.

The heavier subcommands live in modules of their own (``memd.top``,
``memd.bench``), imported only when run, so ``memd check`` and ``memd serve``
start without rich or asyncio load generators.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memd import __version__
from memd.engine.engine import DB_NAME, WAL_DIR, lock_data_dir
from memd.store.schema import SCHEMA_VERSION
from memd.store.sqlitefile import check_file
from memd.engine.wal import WAL, RecoveryReport, list_segments
from memd.errors import MemdError, WALCorruptError

if TYPE_CHECKING:
    from memd.client import SyncClient


def check(data_dir: str) -> int:
    """Offline verification of a data directory; 0 when everything is sound."""
    if not os.path.isdir(data_dir):  # checking must not create it (the lock would): a typo is an error
        print(f"memd check: {data_dir} is not a directory: give the daemon's data directory "
              "(storage.data_dir)", file=sys.stderr)
        return 1
    problems: list[str] = []
    lock_fd = lock_data_dir(data_dir)
    try:
        db_path = os.path.join(data_dir, DB_NAME)
        flushed = 0
        if not os.path.exists(db_path):
            print(f"sqlite: {db_path} does not exist (a new, empty data directory)")
        else:
            try:
                result, version, lsn, keys = check_file(db_path)
                flushed = lsn or 0
                if lsn is None:  # every memd store has it from its creation on: a damaged page lost it
                    problems.append(f"sqlite: {db_path}: the meta table has no flushed LSN (the file is damaged)")
            except sqlite3.DatabaseError as exc:
                problems.append(f"sqlite: {db_path}: {exc}")
                result, version, keys = [], -1, 0
            if result and result != ["ok"]:
                problems.append(f"sqlite: integrity_check: {'; '.join(result[:10])}")
            if version > SCHEMA_VERSION:
                problems.append(f"sqlite: schema version {version} is newer than this memd ({SCHEMA_VERSION})")
            print(f"sqlite: {db_path}: integrity {'ok' if result == ['ok'] else 'FAILED'}, schema v{version}, "
                  f"{keys} keys, flushed LSN {flushed}")
        wal_dir = os.path.join(data_dir, WAL_DIR)
        if os.path.isdir(wal_dir):
            report = RecoveryReport()
            wal = WAL(wal_dir)
            try:
                for _ in wal.replay(flushed, "tolerate-tail", report, repair=False):
                    pass
            except WALCorruptError as exc:
                problems.append(f"wal: {exc}")
            segs = list_segments(wal_dir)
            span = f"segments {segs[0][0]}..{segs[-1][0]}" if segs else "no segments"
            print(f"wal: {len(segs)} segments ({span}), {report.records} records newer than the flushed LSN, "
                  f"last LSN {report.last_lsn}")
            for path, offset, dropped in report.truncated:
                problems.append(f"wal: torn tail in {path} at offset {offset} ({dropped} bytes): the next start "
                                "truncates it (recovery = tolerate-tail) or refuses (absolute)")
    finally:
        os.close(lock_fd)
    for p in problems:
        print(f"PROBLEM {p}")
    if any(p.startswith("sqlite:") for p in problems):
        print(f"to repair: restore the latest backup with `memd restore BACKUP --data-dir {data_dir}` (what the "
              "directory holds now is moved aside, not deleted)")
    print("check: ok" if not problems else f"check: {len(problems)} problem(s)")
    return 0 if not problems else 1


def info(socket_path: str | None, section: str | None) -> int:
    import redis  # noqa: PLC0415

    from memd.config import client_socket_path  # noqa: PLC0415
    path = socket_path or client_socket_path()
    conn = redis.UnixDomainSocketConnection(path=path, socket_timeout=10)  # raw replies: no parsing
    try:  # failures: one line from main()'s describe_error
        conn.send_command("INFO", *([section] if section else []))
        raw = conn.read_response()
    finally:
        conn.disconnect()
    print(raw.decode(errors="replace").replace("\r\n", "\n").rstrip())
    return 0


def backup(socket_path: str | None, timeout: float) -> int:
    """Ask the running daemon for a backup (MEMD.BACKUP); the path of the verified backup is the last line."""
    import redis  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    from memd.client import SyncClient  # noqa: PLC0415
    # no retries: a retried MEMD.BACKUP after a timeout would start a second backup
    client = SyncClient(socket_path, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
    path = client.connection_pool.connection_kwargs.get("path", socket_path)
    try:
        reply = client.execute_command("MEMD.BACKUP")
    except redis.exceptions.TimeoutError:  # (other failures: one line from main()'s describe_error)
        print(f"memd backup: no reply from {path} within {timeout:g} s; the backup may still finish: "
              "see `memd info maintenance` (or raise --timeout)", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(reply.decode(errors="replace") if isinstance(reply, bytes) else reply)
    return 0


def verify_backup(backup_path: str, identity: str | None) -> int:
    """Check one backup offline: end to end when it is plain or an identity is given, else its ciphertext."""
    import tempfile  # noqa: PLC0415

    from memd.maintenance import backup_age  # noqa: PLC0415

    identities = backup_age.identities_for(identity)
    manifest = backup_age.read_any_manifest(backup_age.data_path(backup_path))
    facts = f"LSN {manifest['lsn']}, schema v{manifest['schema_version']}, {manifest['raw_bytes']} bytes"
    if backup_age.is_encrypted(manifest) and identities is None:
        backup_age.verify_without_key(backup_path)
        print(f"memd backup --verify: {backup_path}: ciphertext ok (size, sha256, age header for "
              f"{len(manifest['recipients'])} recipient(s)); {facts} by its manifest. The content was not checked: "
              f"give --identity FILE to decrypt and check it")
        return 0
    # decrypted and decompressed in a private directory, never beside the backup (it may be on shared storage)
    with tempfile.TemporaryDirectory(prefix="memd-verify-") as scratch:
        backup_age.unpack(backup_path, os.path.join(scratch, "check.sqlite3"), identities)
    how = "decrypted and " if backup_age.is_encrypted(manifest) else ""
    print(f"memd backup --verify: {backup_path}: ok ({how}checked: sha256, lz4 checksum, integrity, LSN); {facts}")
    return 0


def restore(backup_path: str, data_dir: str, identity: str | None = None) -> int:
    """Offline restore; the daemon must be stopped (the data directory's lock says so)."""
    from memd.maintenance.backup_age import identities_for  # noqa: PLC0415
    from memd.maintenance.restore import restore as restore_backup  # noqa: PLC0415

    aside = restore_backup(backup_path, data_dir, identities=identities_for(identity))
    print(f"memd restore: the previous contents of {data_dir} were moved to {aside} (nothing was deleted)")
    print(f"memd restore: restored {backup_path} into {os.path.join(data_dir, DB_NAME)}; start the daemon")
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The config keys that ``serve``'s flags (shared with ``config show``) set, as load() overrides."""
    return {k: v for k, v in (("server.socket", args.socket), ("storage.data_dir", args.data_dir),
                              ("storage.fsync", args.fsync)) if v is not None}


def config_check(path: str) -> int:
    """Validate a config file the way the daemon would load it; a bad one raises ConfigError (file and key)."""
    from memd import config  # noqa: PLC0415

    config.load(path)
    print(f"memd config check: {path}: ok")
    return 0


def config_show(path: str | None, overrides: Mapping[str, object]) -> int:
    """Print the effective config (defaults + file + flags) as TOML that load() reads back unchanged."""
    from memd import config  # noqa: PLC0415

    sys.stdout.write(config.to_toml(config.load(path, overrides)))
    return 0


def _client(socket_path: str | None, timeout: float) -> SyncClient:
    """A SyncClient that fails fast: no retries, so a dead socket is reported at once and a slow
    admin command (MEMD.COMPACT) is never sent twice."""
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    from memd.client import SyncClient  # noqa: PLC0415
    return SyncClient(socket_path, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _text(value: object) -> object:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _as_map(reply: object) -> dict[str, object]:
    """A map reply as a dict of str; RESP2 may deliver it as a flat [field, value, ...] list."""
    if isinstance(reply, dict):
        pairs = list(reply.items())
    elif isinstance(reply, list):
        pairs = list(zip(reply[::2], reply[1::2], strict=True))
    else:
        raise MemdError(f"unexpected reply {reply!r}: expected a map")
    return {str(_text(k)): _text(v) for k, v in pairs}


_COMPACT_LABELS = (  # MEMD.COMPACT's fields, in the order an operator reads them
    ("expired_keys", "expired keys purged"),
    ("expired_memories", "expired memories archived"),
    ("tombstones", "memory tombstones dropped"),
    ("history_pruned", "history versions pruned"),
    ("free_pages", "free pages returned"),
    ("checkpoint", "SQLite WAL checkpoint"),
)


def format_compaction(reply: object) -> list[str]:
    """MEMD.COMPACT's map as aligned lines; fields this CLI does not know yet are shown too, as sent."""
    fields = _as_map(reply)
    lines = [f"memd compact: done in {fields.pop('seconds', '?')} s"]
    lines += [f"  {label:<28} {fields.pop(key)}" for key, label in _COMPACT_LABELS if key in fields]
    sizes = [fields.pop(k, None) for k in ("bytes_before", "bytes_after", "bytes_returned")]
    if None not in sizes:
        before, after, returned = (int(str(v)) for v in sizes)
        lines.append(f"  {'database files':<28} {before:,} -> {after:,} bytes ({returned:,} returned)")
    lines += [f"  {key.replace('_', ' '):<28} {value}" for key, value in fields.items()]
    return lines


def compact(socket_path: str | None, timeout: float) -> int:
    """Compact now through the running daemon (MEMD.COMPACT) and print what it removed."""
    client = _client(socket_path, timeout)
    try:
        reply = client.execute_command("MEMD.COMPACT")
    finally:
        client.close()
    print("\n".join(format_compaction(reply)))
    return 0


def top(socket_path: str | None, interval: float, once: bool) -> int:
    """The live view (memd.top); one MEMD.STATS per interval."""
    from memd import top as top_view  # noqa: PLC0415 - rich only when drawing

    client = _client(socket_path, max(10.0, 2 * interval))
    try:
        return top_view.run(client.memd_stats, _socket_for(socket_path), interval, once)
    finally:
        client.close()


def bench(args: argparse.Namespace) -> int:
    """Run the load generator (memd.bench) and print its results on stdout (the progress bar is on stderr)."""
    from memd import bench as load  # noqa: PLC0415

    plan = load.Plan(socket_path=_socket_for(args.socket), requests=args.requests, clients=args.clients,
                     pipeline=args.pipeline, value_size=args.value_size, keys=args.keys, command=args.command_)
    print("\n".join(load.report(plan, load.run(plan))))
    return 0


def _socket_for(socket_path: str | None) -> str:
    """The socket a client subcommand talks to: --socket, else where memd.client looks."""
    from memd.config import client_socket_path  # noqa: PLC0415
    return socket_path or client_socket_path()


def _oserror_number(exc: BaseException) -> int | None:
    """The errno behind a redis-py ConnectionError: its context, else its "Error N connecting" text."""
    inner = exc.__cause__ or exc.__context__
    if isinstance(inner, OSError) and inner.errno:
        return inner.errno
    m = re.match(r"Error (\d+) ", str(exc))
    return int(m.group(1)) if m else None


def _connection_problem(exc: BaseException, path: str) -> str:
    """Say why a socket could not be used, and what to do, in words an operator acts on."""
    number = _oserror_number(exc)
    if number in (errno.EACCES, errno.EPERM):
        return f"permission denied on {path}: run it as the daemon's user or a member of the socket's group"
    if number == errno.ENOENT:
        return (f"no daemon answers on {path}: no such socket (start one with `memd serve`, or pass --socket "
                "or set MEMD_SOCKET)")
    if number == errno.ECONNREFUSED:
        return f"no daemon answers on {path}: connection refused (a stale socket file, or not a socket)"
    if number == errno.ENOTDIR:
        return f"no daemon answers on {path}: a component of the path is not a directory"
    if "too long" in str(exc):
        return f"bad socket path {path}: longer than the unix socket path limit of 107 bytes"
    return f"lost the connection to {path}: {exc}"


def describe_error(exc: BaseException, socket_path: str | None = None) -> str | None:
    """One line for an expected failure; None for anything else (a bug, which keeps its traceback).

    ``socket_path`` is the socket the command used, for the messages about it.
    """
    import redis.exceptions as rex  # noqa: PLC0415

    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return describe_error(exc.exceptions[0], socket_path)  # (a task group wraps what `serve` raises)
    where = socket_path or "the daemon's socket"
    if isinstance(exc, rex.TimeoutError):
        return f"no reply from {where} in time ({exc}); the daemon may be busy or stuck: see `memd info`"
    if isinstance(exc, rex.ConnectionError):
        return _connection_problem(exc, where)
    if isinstance(exc, rex.ResponseError):
        return f"the daemon replied with an error: {exc}"
    if isinstance(exc, rex.RedisError | MemdError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)
    return None


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type for numbers that must be > 0 (a zero interval or zero clients makes no sense)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0 (got {text})")
        return value
    parse.__name__ = kind.__name__
    return parse


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """The flags that override the config file; ``serve`` and ``config show`` take the same ones."""
    p.add_argument("--config", help="TOML config file (default: embedded defaults)")
    p.add_argument("--socket", help="Unix socket path to listen on")
    p.add_argument("--data-dir", help="data directory (WAL, SQLite, lock file)")
    p.add_argument("--fsync", choices=("always", "everysec", "no"), help="WAL fsync policy")


_SOCKET_HELP = "daemon socket (default: $MEMD_SOCKET, /run/memd/memd.sock, per-user)"
_IDENTITY_HELP = ("age identity file (AGE-SECRET-KEY-1..., from age-keygen) for an encrypted backup; default: "
                  "$CREDENTIALS_DIRECTORY/memd-backup-identity when systemd passes that credential")


def _add_operator_parsers(sub: Any) -> None:
    """config check|show, compact, top, bench: added after the original subcommands, which stay as they were."""
    p = sub.add_parser("config", help="validate a config file, or print the effective config")
    csub = p.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate FILE; non-zero exit naming the file and key if it is wrong")
    c.add_argument("file", help="the TOML config file to validate")
    c = csub.add_parser("show", help="print the effective config (defaults + file + flags) as TOML")
    _add_config_flags(c)
    p = sub.add_parser("compact", help="compact now, through the running daemon; prints what was removed")
    p.add_argument("--socket", help=_SOCKET_HELP)
    p.add_argument("--timeout", type=_positive(float), default=3600.0,
                   help="seconds to wait for the compaction (default 3600)")
    p = sub.add_parser("top", help="live view of the running daemon (Ctrl-C exits)")
    p.add_argument("--socket", help=_SOCKET_HELP)
    p.add_argument("--interval", type=_positive(float), default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame (two samples --interval apart) and exit")
    p = sub.add_parser("bench", help="load generator: throughput and client-side latency percentiles "
                       "(writes keys memd-bench:* / memories under memd-bench)")
    p.add_argument("--socket", help=_SOCKET_HELP)
    p.add_argument("--requests", type=_positive(int), default=100_000, help="total requests (default 100000)")
    p.add_argument("--clients", type=_positive(int), default=50, help="connections (default 50)")
    p.add_argument("--pipeline", type=_positive(int), default=1, help="commands per round trip (default 1)")
    p.add_argument("--value-size", type=_positive(int), default=200, help="value bytes (default 200)")
    p.add_argument("--keys", type=_positive(int), default=10_000, help="distinct keys, picked at random "
                   "(default 10000)")
    p.add_argument("--command", dest="command_", choices=("set", "get", "mem.put"), default="set",
                   help="what to send (default set)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memd", description="local persistence daemon for AI-agent memory")
    parser.add_argument("--version", action="version", version=f"memd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the daemon (flags override the config file)")
    _add_config_flags(p)
    p = sub.add_parser("info", help="print INFO from the running daemon")
    p.add_argument("--socket", help="daemon socket (default: $MEMD_SOCKET, /run/memd/memd.sock, per-user)")
    p.add_argument("section", nargs="?", help="one INFO section")
    p = sub.add_parser("check", help="verify a data directory offline (WAL segments, SQLite integrity)")
    p.add_argument("--data-dir", required=True, help="the data directory to verify (no daemon may be using it)")
    p = sub.add_parser("backup", help="make a verified backup now, through the running daemon; prints its path")
    p.add_argument("--socket", help="daemon socket (default: $MEMD_SOCKET, /run/memd/memd.sock, per-user)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the backup (default 3600)")
    p.add_argument("--verify", metavar="BACKUP", help="instead, check BACKUP offline (no daemon): end to end, or "
                   "for an encrypted one without --identity its ciphertext only; scratch space in $TMPDIR")
    p.add_argument("--identity", metavar="FILE", help=_IDENTITY_HELP)
    p = sub.add_parser("restore", help="restore a backup into a data directory no daemon is using (offline)")
    p.add_argument("backup", help="the backup file (memd-...sqlite3.lz4[.age], or its .json manifest)")
    p.add_argument("--data-dir", required=True, help="the data directory to restore into; its contents are moved "
                   "aside, not deleted")
    p.add_argument("--identity", metavar="FILE", help=_IDENTITY_HELP)
    _add_operator_parsers(sub)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check":
        return check(args.data_dir)
    if args.command == "serve":
        from memd import config, daemon  # noqa: PLC0415 - only the daemon needs these
        overrides = _overrides(args)
        return daemon.serve(config.load(args.config, overrides), config_path=args.config, overrides=overrides)
    if args.command == "info":
        return info(args.socket, args.section)
    if args.command == "backup":
        if args.verify is not None:
            return verify_backup(args.verify, args.identity)
        if args.identity is not None:
            raise MemdError("--identity goes with --verify BACKUP: the daemon never gets an identity")
        return backup(args.socket, args.timeout)
    if args.command == "restore":
        return restore(args.backup, args.data_dir, args.identity)
    if args.command == "config":
        if args.config_command == "check":
            return config_check(args.file)
        return config_show(args.config, _overrides(args))
    if args.command == "compact":
        return compact(args.socket, args.timeout)
    if args.command == "top":
        return top(args.socket, args.interval, args.once)
    if args.command == "bench":
        return bench(args)
    return 2


_CLIENT_COMMANDS = ("info", "backup", "compact", "top", "bench")  # their --socket is the daemon's, to connect to


def _quiet_broken_pipe() -> None:
    """`memd config show | head -1`: stdout is gone; point it at /dev/null so the exit flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    name = " ".join(["memd", args.command, *([args.config_command] if args.command == "config" else [])])
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 141  # what a shell reports for a process ended by SIGPIPE
    except Exception as exc:  # noqa: BLE001 - describe_error decides; unexpected ones are re-raised
        socket_path = _socket_for(args.socket) if args.command in _CLIENT_COMMANDS else None
        message = describe_error(exc, socket_path)
        if message is None:
            raise
        print(f"{name}: {' '.join(message.split())}", file=sys.stderr)  # always one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
