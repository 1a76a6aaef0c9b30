"""The ``memd`` command line.

Every expected failure (a data directory in use, a corrupt file, a bad
config) is one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence

from memd import __version__
from memd.engine.engine import DB_NAME, WAL_DIR, lock_data_dir
from memd.engine.store import SCHEMA_VERSION
from memd.engine.wal import WAL, RecoveryReport, list_segments
from memd.errors import MemdError, WALCorruptError


def check(data_dir: str) -> int:
    """Offline verification of a data directory; 0 when everything is sound."""
    problems: list[str] = []
    lock_fd = lock_data_dir(data_dir)
    try:
        db_path = os.path.join(data_dir, DB_NAME)
        flushed = 0
        if not os.path.exists(db_path):
            print(f"sqlite: {db_path} does not exist (a new, empty data directory)")
        else:
            conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            try:
                result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                row = conn.execute("SELECT value FROM meta WHERE name = 'flushed_lsn'").fetchone()
                flushed = int(row[0]) if row else 0
                keys = conn.execute("SELECT count(*) FROM keys").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                problems.append(f"sqlite: {db_path}: {exc}")
                result, version, keys = [], -1, 0
            finally:
                conn.close()
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
    print("check: ok" if not problems else f"check: {len(problems)} problem(s)")
    return 0 if not problems else 1


def info(socket_path: str | None, section: str | None) -> int:
    import redis  # noqa: PLC0415

    from memd.config import client_socket_path  # noqa: PLC0415
    path = socket_path or client_socket_path()
    conn = redis.UnixDomainSocketConnection(path=path, socket_timeout=10)  # raw replies: no parsing
    try:
        conn.send_command("INFO", *([section] if section else []))
        raw = conn.read_response()
    except redis.exceptions.ConnectionError as exc:
        print(f"memd info: no daemon answers on {path}: {exc}", file=sys.stderr)
        return 2
    except redis.exceptions.ResponseError as exc:
        print(f"memd info: {exc}", file=sys.stderr)
        return 2
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
    except redis.exceptions.TimeoutError:
        print(f"memd backup: no reply from {path} within {timeout:g} s; the backup may still finish: "
              "see `memd info maintenance` (or raise --timeout)", file=sys.stderr)
        return 2
    except redis.exceptions.ConnectionError as exc:
        if "Permission denied" in str(exc):
            print(f"memd backup: permission denied on {path}: run it as the daemon's user or a member of the "
                  "socket's group", file=sys.stderr)
        else:
            print(f"memd backup: no daemon answers on {path}: {exc}", file=sys.stderr)
        return 2
    except redis.exceptions.RedisError as exc:
        print(f"memd backup: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(reply.decode(errors="replace") if isinstance(reply, bytes) else reply)
    return 0


def restore(backup_path: str, data_dir: str) -> int:
    """Offline restore; the daemon must be stopped (the data directory's lock says so)."""
    from memd.maintenance.restore import restore as restore_backup  # noqa: PLC0415

    aside = restore_backup(backup_path, data_dir)
    print(f"memd restore: the previous contents of {data_dir} were moved to {aside} (nothing was deleted)")
    print(f"memd restore: restored {backup_path} into {os.path.join(data_dir, DB_NAME)}; start the daemon")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memd", description="local persistence daemon for AI-agent memory")
    parser.add_argument("--version", action="version", version=f"memd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the daemon (flags override the config file)")
    p.add_argument("--config", help="TOML config file (default: embedded defaults)")
    p.add_argument("--socket", help="Unix socket path to listen on")
    p.add_argument("--data-dir", help="data directory (WAL, SQLite, lock file)")
    p.add_argument("--fsync", choices=("always", "everysec", "no"), help="WAL fsync policy")
    p = sub.add_parser("info", help="print INFO from the running daemon")
    p.add_argument("--socket", help="daemon socket (default: $MEMD_SOCKET, /run/memd/memd.sock, per-user)")
    p.add_argument("section", nargs="?", help="one INFO section")
    p = sub.add_parser("check", help="verify a data directory offline (WAL segments, SQLite integrity)")
    p.add_argument("--data-dir", required=True, help="the data directory to verify (no daemon may be using it)")
    p = sub.add_parser("backup", help="make a verified backup now, through the running daemon; prints its path")
    p.add_argument("--socket", help="daemon socket (default: $MEMD_SOCKET, /run/memd/memd.sock, per-user)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the backup (default 3600)")
    p = sub.add_parser("restore", help="restore a backup into a data directory no daemon is using (offline)")
    p.add_argument("backup", help="the backup file (memd-...sqlite3.lz4, or its .json manifest)")
    p.add_argument("--data-dir", required=True, help="the data directory to restore into; its contents are moved "
                   "aside, not deleted")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "check":
            return check(args.data_dir)
        if args.command == "serve":
            from memd import config, daemon  # noqa: PLC0415 - only the daemon needs these
            overrides = {k: v for k, v in (("server.socket", args.socket), ("storage.data_dir", args.data_dir),
                                           ("storage.fsync", args.fsync)) if v is not None}
            return daemon.serve(config.load(args.config, overrides), config_path=args.config, overrides=overrides)
        if args.command == "info":
            return info(args.socket, args.section)
        if args.command == "backup":
            return backup(args.socket, args.timeout)
        if args.command == "restore":
            return restore(args.backup, args.data_dir)
    except MemdError as exc:
        print(f"memd {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"memd {args.command}: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
