"""The loops every differential test file runs, written once.

Each family's differential test compares memd with a real redis-server 7.0
the same way: start a redis-server of its own, split a corpus of edge cases
into blocks, send each block (one command per round trip or pipelined),
then seeded random sequences with memd's buffer flushed to SQLite now and
then. Only the commands, the seeds and the checks after a block or a seed
differ from one family to the next; those are the parameters here, so a
fix to the harness (how Redis is started, how a random step is sent) lands
in every file at once.

This module knows nothing of the pair classes: a pair is anything with
``run(args, where)``, ``protocol``, ``mismatches`` and ``count`` (and
``memd_flush()`` / ``pipeline()`` / ``assert_clean()`` for the daemon's).
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memd.engine.engine import Engine

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

Words = Callable[[str], list[bytes]]
Check = Callable[[Any, str], None]  # (pair, where): what runs after a corpus block or a random seed


def cmd(line: str) -> list[bytes]:
    return [a.encode("utf-8", "surrogateescape") for a in shlex.split(line)]


# ---- redis-server ---------------------------------------------------------------------------------

@contextlib.contextmanager
def redis_server(prefix: str, *extra: str) -> Iterator[str]:
    """A redis-server of one's own on a Unix socket (``extra``: options such as ``--databases 1``).

    Fails, never skips, when redis-server is missing: the differential tests are the arbiter
    of memd's Redis semantics and must not pass by not running."""
    if not os.path.exists(REDIS_SERVER):
        pytest.fail(f"redis-server not found (looked for {REDIS_SERVER}): the differential test needs "
                    "Redis 7.0 installed (Debian: apt-get install redis-server)")
    base = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # AF_UNIX paths are short
    path = os.path.join(base, "redis.sock")
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no",
         "--dir", base, "--daemonize", "no", "--loglevel", "warning", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"redis-server exited with {proc.returncode}: {err}")
            if os.path.exists(path):
                probe = socket.socket(socket.AF_UNIX)
                try:
                    probe.connect(path)
                    break
                except OSError:
                    pass
                finally:
                    probe.close()
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not listen within 10 s")
            time.sleep(0.02)
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(base, ignore_errors=True)


# ---- corpora ----------------------------------------------------------------------------------------

def split_corpus(text: str) -> list[list[str]]:
    """A corpus's blocks: a ``#`` line starts a new one (each block starts on an empty keyspace)."""
    blocks: list[list[str]] = [[]]
    for line in text.strip().splitlines():
        if line.startswith("#"):
            blocks.append([])
        elif line.strip():
            blocks[-1].append(line)
    return [b for b in blocks if b]


def run_lines(pair: Any, text: str, where: str, words: Words = cmd) -> None:
    """Every line of ``text`` as one command, in order (mismatches collected by the pair)."""
    for line in text.strip().splitlines():
        pair.run(words(line), where)


def send(pair: Any, command: list[str] | tuple[Any, ...], where: str, encoding: str = "utf-8") -> None:
    """One generated command: a list is sent; a tuple is a whole SCAN iteration ``(name, opts)``,
    or, on a pair that knows element scans, ``(name, key, opts)``."""
    if isinstance(command, tuple):
        pair.scan_command(command, where)
    else:
        pair.run([a.encode(encoding) for a in command], where)


# ---- in process: memd's handlers and an Engine ------------------------------------------------------

async def with_engine_pair(pair_cls: Callable[[str, Engine, int], Any], redis_socket: str, tmp_path: Path,
                           protocol: int, body: Callable[[Any, Engine], Awaitable[None]],
                           noun: str = "replies") -> None:
    """A fresh Engine and a pair over it, ``body`` run on an empty keyspace; all mismatches shown at once."""
    async with Engine(str(tmp_path / "data")) as engine:
        pair = pair_cls(redis_socket, engine, protocol)
        try:
            pair.run([b"FLUSHALL"], "setup")
            await body(pair, engine)
        finally:
            pair.close()
    assert not pair.mismatches, f"{len(pair.mismatches)} of {pair.count} {noun} differ:\n" + \
        "\n".join(pair.mismatches[:40])


async def corpus_in_process(pair: Any, engine: Engine, blocks: list[list[str]], *, flush_every: int,
                            words: Words = cmd, after_block: Check | None = None) -> None:
    """Each block on an empty keyspace, the buffer flushed every ``flush_every`` lines so later reads
    merge SQLite with the memtables."""
    for n, block in enumerate(blocks):
        pair.run(words("FLUSHALL"), f"block {n}")
        for j, line in enumerate(block):
            pair.run(words(line), f"block {n}: {block[0][:30]}")
            if j % flush_every == flush_every - 1:
                await engine.flush()
        if after_block is not None:
            after_block(pair, f"block {n}")


async def random_in_process(pair: Any, engine: Engine, generate: Callable[[random.Random], Any], *, seeds: int,
                            steps: int, flush_chance: float, after_seed: Check, seed_base: int = 0,
                            encoding: str = "utf-8") -> None:
    """Seeded random sequences (seed ``seed_base + 10 * n + protocol``), each on an empty keyspace."""
    for seed in range(seeds):
        rng = random.Random(seed_base + seed * 10 + pair.protocol)
        pair.run([b"FLUSHALL"], f"seed {seed}")
        for step in range(steps):
            send(pair, generate(rng), f"seed {seed} step {step}", encoding)
            if rng.random() < flush_chance:
                await engine.flush()
        after_seed(pair, f"seed {seed} end")


# ---- over a real daemon ---------------------------------------------------------------------------

def corpus_over_daemon(pair: Any, blocks: list[list[str]], *, flush_every: int | None = None,
                       pipelined: bool = False, words: Words = cmd, after_block: Check | None = None) -> None:
    """Each block on an empty keyspace, one command per round trip (the buffer flushed every
    ``flush_every`` lines) or as one pipelined write; then no mismatch allowed."""
    for n, block in enumerate(blocks):
        pair.run(words("FLUSHALL"), f"block {n}")
        if pipelined:
            pair.pipeline([words(line) for line in block], f"pipelined block {n}")
        else:
            for j, line in enumerate(block):
                pair.run(words(line), f"block {n}: {block[0][:30]}")
                if flush_every is not None and j % flush_every == flush_every - 1:
                    pair.memd_flush()
        if after_block is not None:
            after_block(pair, f"{'pipelined ' if pipelined else ''}block {n}")
    pair.assert_clean()


def random_over_daemon(pair: Any, step: Callable[[random.Random, str], None], *, seeds: int, steps: int,
                       seed_base: int, flush_chance: float, after_seed: Check | None = None) -> None:
    """Seeded random sequences (seed ``seed_base + 10 * n + protocol``) on one connection each side;
    ``step`` sends what one step sends (a command, a transaction, a batch); then no mismatch allowed.
    With ``flush_chance`` 0 no draw is made: a ``step`` that flushes only on some paths draws itself."""
    for seed in range(seeds):
        rng = random.Random(seed_base + seed * 10 + pair.protocol)
        pair.run([b"FLUSHALL"], f"seed {seed}")
        for n in range(steps):
            step(rng, f"seed {seed} step {n}")
            if flush_chance and rng.random() < flush_chance:
                pair.memd_flush()
        if after_seed is not None:
            after_seed(pair, f"seed {seed} end")
    pair.assert_clean()


def scan_keys(count: bytes) -> Check:
    """The check after a block or a seed most files run: a whole SCAN iteration, the same keys."""
    def check(pair: Any, where: str) -> None:
        pair.scan_all([b"COUNT", count], where)
    return check
