#!/usr/bin/env python3
"""Regenerate memd/commands/redis_commands.json: Redis 7.0's command table, as redis-server reports it.

memd answers COMMAND, COMMAND INFO/DOCS/LIST/GETKEYS from this file (for the
commands it implements), so clients see exactly the metadata Redis 7.0 gives:
arity, flags, key positions and key specs, ACL categories, tips, docs. The
file is generated, not hand-written, so it cannot drift from Redis; rerun this
script when the reference Redis version moves, and commit the result.

It starts a throwaway ``redis-server`` (or uses ``--socket PATH`` of a running
one), asks ``COMMAND INFO`` and ``COMMAND DOCS`` over RESP3, and stores each
reply with its RESP3 types kept (memd re-encodes them for RESP2 and RESP3):
bulk string -> JSON string, integer -> number, null -> null, array -> list,
map -> object, set -> ``{"~": [...]}``, simple string -> ``{"+": "text"}``.

Usage: python3 scripts/gen_redis_commands.py [--socket PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, BinaryIO

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "memd", "commands",
                   "redis_commands.json")


def _pack(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _read(f: BinaryIO) -> Any:
    """One RESP3 reply as the tagged JSON value described in the module docstring."""
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return {"+": rest.decode()}
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"_":
        return None
    n = int(rest)
    if kind in b"$=":
        text = f.read(n + 2)[:-2].decode() if n >= 0 else None
        return text[4:] if kind == b"=" and text is not None else text  # verbatim: "txt:" first
    if kind == b"*":
        return [_read(f) for _ in range(n)]
    if kind == b"~":
        return {"~": [_read(f) for _ in range(n)]}
    if kind == b"%":
        out: dict[str, Any] = {}
        for _ in range(n):
            key = _read(f)
            if not isinstance(key, str) or key in ("~", "+"):
                raise RuntimeError(f"unexpected map key {key!r}")
            out[key] = _read(f)
        return out
    raise RuntimeError(f"unexpected reply {line!r}")


def collect(path: str) -> dict[str, Any]:
    """{command name: {"info": COMMAND INFO entry, "docs": COMMAND DOCS entry}}, sorted by name."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    f = sock.makefile("rb")
    try:
        sock.sendall(_pack([b"HELLO", b"3"]))
        _read(f)
        sock.sendall(_pack([b"INFO", b"server"]))
        version = next(line.split(":", 1)[1] for line in _read(f).splitlines() if line.startswith("redis_version:"))
        if not version.startswith("7.0."):
            raise RuntimeError(f"redis-server {version}: memd follows Redis 7.0")
        sock.sendall(_pack([b"COMMAND", b"INFO"]))
        infos = _read(f)
        sock.sendall(_pack([b"COMMAND", b"DOCS"]))
        docs = _read(f)
    finally:
        f.close()
        sock.close()
    table = {entry[0]: {"info": entry, "docs": docs[entry[0]]} for entry in infos}
    return {"redis_version": version, "commands": dict(sorted(table.items()))}


def _serve(base: str) -> tuple[subprocess.Popen[bytes], str]:
    path = os.path.join(base, "redis.sock")
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([server, "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no",
                             "--dir", base], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", help="a running redis-server 7.0's Unix socket (default: start one)")
    parser.add_argument("--out", default=OUT)
    opts = parser.parse_args()
    if opts.socket:
        table = collect(opts.socket)
    else:
        base = tempfile.mkdtemp(prefix="rcmd-", dir="/tmp")
        proc, path = _serve(base)
        try:
            table = collect(path)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            shutil.rmtree(base, ignore_errors=True)
    with open(opts.out, "w") as fh:  # one command per line: a new Redis version diffs readably
        fh.write('{"redis_version":%s,"commands":{\n' % json.dumps(table["redis_version"]))
        fh.write(",\n".join(f"{json.dumps(name)}:{json.dumps(entry, separators=(',', ':'))}"
                             for name, entry in table["commands"].items()))
        fh.write("\n}}\n")
    print(f"{opts.out}: {len(table['commands'])} commands of Redis {table['redis_version']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
