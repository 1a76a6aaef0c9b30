"""Differential test of the stream family against a real redis-server 7.0.

Covers XADD XRANGE XREVRANGE XLEN XDEL XTRIM XREAD XSETID XINFO and the consumer
groups (XGROUP XREADGROUP XACK XPENDING XCLAIM XAUTOCLAIM), with the key commands that
treat a stream like any other value (TYPE, OBJECT ENCODING, DEL, EXPIRE, RENAME, COPY,
SCAN TYPE), in-process (memd's handlers, the buffer flushed now and then so reads merge
SQLite with the memtables) and over a real daemon (pipelines, MULTI/EXEC), RESP2 and RESP3.

Ids are explicit in the compared sequences, so both sides hold the same entries.
Replies that carry a time are compared by named properties instead of bytes:

- *epoch times* (XINFO STREAM FULL's delivery and seen times): within 5 s of each other;
- *idle times* (XPENDING's extended form, XINFO CONSUMERS's ``idle``): not negative and
  within 5 s of each other;
- *generated ids* (XADD ``*``, ``ms-*``): a well-formed id, above the previous top item
  (test_generated_ids).

``MAXLEN ~`` / ``MINID ~`` are checked by property (memd trims exactly to the bound,
Redis whole nodes at most: never fewer entries kept than memd, and the same newest ones).
redis-server is a hard requirement.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.integration.test_differential_handlers as handlers
import tests.integration.test_differential_server as server
from memd.commands import load_all
from memd.engine.engine import Engine
from tests.integration.diffkit import (
    corpus_in_process,
    corpus_over_daemon,
    random_in_process,
    random_over_daemon,
    split_corpus,
    with_engine_pair,
)
from tests.integration.test_differential_handlers import (  # noqa: F401  (redis_socket is a fixture)
    Pair,
    cmd,
    parse,
    redis_socket,
)
from tests.integration.test_differential_server import memd_socket  # noqa: F401  (a fixture)
from tests.integration.test_differential_server import Pair as ServerPair

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]

load_all()

SEEDS = int(os.environ.get("MEMD_DIFF_SEEDS", "6"))
STEPS = 250
EPOCH_MIN = 10**12  # an integer this large in a stream reply is a time in ms
TOLERANCE_MS = 5000
_ORIGINAL_SAME = handlers.same


# ---- comparing replies that carry times ---------------------------------------------------------

def _times_close(a: Any, b: Any, idle: bool = False) -> bool:
    """Walk two parsed replies together: epoch times, and values in an idle place, may differ a little."""
    (ka, va), (kb, vb) = a, b
    if ka != kb:
        return False
    if ka == b":" and va != vb:
        x, y = int(va), int(vb)
        if x >= EPOCH_MIN and y >= EPOCH_MIN:
            return abs(x - y) <= TOLERANCE_MS
        return idle and x >= 0 and y >= 0 and abs(x - y) <= TOLERANCE_MS
    if isinstance(va, list) and isinstance(vb, list):
        if len(va) != len(vb):
            return False
        after_idle_name = False
        for j, (x, y) in enumerate(zip(va, vb)):
            # XINFO CONSUMERS's "idle" value; XPENDING's extended entries: [id, consumer, idle, count]
            in_idle = after_idle_name or (ka == b"*" and len(va) == 4 and j == 2 and x[0] == b":"
                                          and va[0][0] == b"$" and va[1][0] == b"$")
            if not _times_close(x, y, in_idle):
                return False
            after_idle_name = x[0] in (b"$", b"+") and x[1] == b"idle"
        return True
    return bool(va == vb)


TIMED = {b"xpending", b"xinfo"}


def stream_same(name: bytes, a: bytes, b: bytes) -> bool:
    if _ORIGINAL_SAME(name, a, b):
        return True
    if name in TIMED and not a.startswith(b"-") and not b.startswith(b"-"):
        return _times_close(parse(a), parse(b))
    return False


@pytest.fixture(autouse=True)
def _times_by_property(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "same", stream_same)
    monkeypatch.setattr(server, "same", stream_same)


# ---- fixed corpus -------------------------------------------------------------------------------

CORPUS = r"""
# ids: parsing and ordering errors
XADD s 1-1 a 1
XADD s 1-1 a 1
XADD s 1-0 a 1
XADD s 1-* b 2
XADD s 2 c 3
XADD s 0-0 a 1
XADD s 0 a 1
XADD s 0-* a 1
XADD s -1 a 1
XADD s 1-2-3 a 1
XADD s abc a 1
XADD s " 5" a 1
XADD s +6 a 1
XADD s 007 a 1
XADD s 18446744073709551616 a 1
XADD s 18446744073709551615-18446744073709551615 a 1
XADD s * a 1
XADD s 7 a
XADD s 7
XADD s 8-* a 1 b
XADD s - a 1
XADD s + a 1
XLEN s
XRANGE s - +
XRANGE s 1 1
XRANGE s 1-1 1-2
XRANGE s (1-1 +
XRANGE s - (2-0
XRANGE s (18446744073709551615-18446744073709551615 +
XRANGE s - (0-0
XRANGE s ( +
XRANGE s (- +
XRANGE s bad +
XRANGE s 5 1
XRANGE s - + COUNT 0
XRANGE s - + COUNT -1
XRANGE s - + COUNT 2
XRANGE s - + COUNT x
XRANGE s - + FOO 1
XREVRANGE s + - COUNT 2
XREVRANGE s (18446744073709551615-18446744073709551615 -
XREVRANGE s 1 2
XRANGE nokey - +
XLEN nokey
# the last possible id
XADD s 18446744073709551615-18446744073709551615 a 1
XADD s 18446744073709551615-* a 1
XADD s * a 1
XINFO STREAM s
# NOMKSTREAM and options
XADD s NOMKSTREAM 1 a 1
EXISTS s
XADD s NOMKSTREAM MAXLEN 5 1 a 1
XADD s 1 a 1
XADD s NOMKSTREAM 2 b 2
XADD s MAXLEN 1 MINID 1 3 a b
XADD s MINID 1 MAXLEN 1 3 a b
XADD s LIMIT 5 3 a b
XADD s MAXLEN 5 LIMIT 5 3 a b
XADD s MAXLEN = 5 LIMIT 5 3 a b
XADD s MAXLEN -1 3 a b
XADD s MAXLEN x 3 a b
XADD s MAXLEN ~ 3 a b
XADD s LIMIT -1 3 a b
XADD s MAXLEN
XADD s MINID ( 3 a b
XADD s MINID - 3 a b
XADD s MAXLEN = 2 3 a b
XRANGE s - +
XADD s MINID = 3 4 a b
XRANGE s - +
XADD s MAXLEN 0 5 c d
XLEN s
XINFO STREAM s
XADD s maxlen 1 nomkstream 6 e f
XRANGE s - +
# a run of trimming XADDs (pipelined over the daemon: one run, one WAL record)
XADD s 1 a 1
XADD s 2 a 2
XADD s MAXLEN 2 3 a 3
XADD s MAXLEN 2 4 a 4
XADD s MAXLEN 2 4 a 4
XADD s MAXLEN 1 5-* a 5
XADD s MINID 5 6 a 6
XADD s MAXLEN 0 7 a 7
XADD s MAXLEN 3 8 a 8
XADD s MAXLEN 3 9 a 9
XADD s MAXLEN ~ 0 LIMIT 1 10 a 10
XADD s MINID = 10 11 a 11
XADD t MAXLEN 1 1 b 1
XADD s NOMKSTREAM MAXLEN 1 12 a 12
XADD u NOMKSTREAM MAXLEN 1 1 a 1
XADD s MAXLEN 5 13 a 13
XRANGE s - +
XINFO STREAM s
# XTRIM
XADD s 1 a 1
XADD s 2 a 2
XADD s 3 a 3
XADD s 4 a 4
XTRIM s MAXLEN 2
XRANGE s - +
XTRIM s MINID 4
XRANGE s - +
XTRIM s MINID = 100
XLEN s
EXISTS s
XINFO STREAM s
XTRIM s
XTRIM s FOO 1
XTRIM s MAXLEN 1 FOO
XTRIM s MAXLEN 1 LIMIT 10
XTRIM s NOMKSTREAM MAXLEN 1
XTRIM nokey MAXLEN 1
XTRIM s MAXLEN ~ 0 LIMIT 0
# XDEL and the counters
XADD s 1 a 1
XADD s 2 b 2
XADD s 3 c 3
XDEL s 2 2 9
XDEL s 1-0 bad
XDEL s -
XDEL nokey 1
XINFO STREAM s
XDEL s 1 3
XLEN s
XINFO STREAM s
XADD s 3 a 1
XADD s 4 a 1
XINFO STREAM s
# XSETID
XADD s 5 a 1
XSETID s 4
XSETID s 5-1
XSETID s 10 ENTRIESADDED 0
XSETID s 10 ENTRIESADDED -1
XSETID s 10 MAXDELETEDID 11
XSETID s 10 ENTRIESADDED 7 MAXDELETEDID 3
XSETID s 10 FOO
XSETID s -
XSETID nokey 5
XINFO STREAM s
XADD s 10 a 1
XADD s 10-* a 1
XDEL s 5 10-1
XSETID s 1 ENTRIESADDED 9
XINFO STREAM s FULL
# XREAD
XADD s 1 a 1
XADD s 2 b 2
XADD t 5 x y
XREAD STREAMS s 0
XREAD COUNT 1 STREAMS s t 0 0
XREAD COUNT 0 STREAMS s t 1 0
XREAD STREAMS s t $ $
XREAD STREAMS s nokey 0 0
XREAD STREAMS s s 0 1
XREAD STREAMS s >
XREAD STREAMS s -
XREAD STREAMS s +
XREAD STREAMS s
XREAD STREAMS s t 0
XREAD COUNT -5 STREAMS s 1
XREAD COUNT x STREAMS s 0
XREAD GROUP g c STREAMS s 0
XREAD NOACK STREAMS s 0
XREAD FOO STREAMS s 0
XREAD COUNT 1
XREAD BLOCK -1 STREAMS s 0
XREAD BLOCK x STREAMS s 0
XREAD BLOCK 10 STREAMS s 0
XREAD STREAMS s 18446744073709551615-18446744073709551615
# groups: lifecycle
XGROUP CREATE s g $
XGROUP CREATE s g $ MKSTREAM
XGROUP CREATE s g $ MKSTREAM
XGROUP CREATE s g2 0 ENTRIESREAD 0
XGROUP CREATE s g3 0 ENTRIESREAD -2
XGROUP CREATE s g3 0 ENTRIESREAD x
XGROUP CREATE s g3 0 FOO
XGROUP CREATE s g3 - MKSTREAM
XGROUP CREATE s g3 bad
XGROUP CREATE s g3 0 MKSTREAM ENTRIESREAD 1 MKSTREAM
XGROUP FOO s g
XGROUP DESTROY s
XGROUP DESTROY s g x
XGROUP SETID s nog 0
XGROUP SETID s g 0 ENTRIESREAD
XGROUP SETID s g 0 MKSTREAM
XGROUP CREATECONSUMER s nog c
XGROUP DELCONSUMER s nog c
XGROUP DESTROY nokey g
XGROUP CREATE nokey g $
XGROUP HELP
XGROUP help x
XINFO GROUPS s
XINFO GROUPS nokey
XGROUP DESTROY s g2
XGROUP DESTROY s g2
XINFO GROUPS s
# groups: delivery, PEL, acknowledgements
XADD s 1 a 1
XADD s 2 b 2
XADD s 3 c 3
XGROUP CREATE s g 0
XGROUP CREATE s g2 $
XINFO GROUPS s
XREADGROUP GROUP g c1 COUNT 1 STREAMS s >
XREADGROUP GROUP g c1 STREAMS s >
XREADGROUP GROUP g c1 STREAMS s >
XREADGROUP GROUP g2 c2 NOACK STREAMS s >
XADD s 4 d 4
XREADGROUP GROUP g2 c2 NOACK STREAMS s >
XREADGROUP GROUP nog c1 STREAMS s >
XREADGROUP GROUP g c1 STREAMS s $
XREADGROUP GROUP g c1 STREAMS s
XREADGROUP GROUP g c1 STREAMS s nokey > >
XREADGROUP GROUP g c1 STREAMS s 0
XREADGROUP GROUP g c1 COUNT 1 STREAMS s 1
XREADGROUP GROUP g c9 STREAMS s 0
XREADGROUP STREAMS s >
XREADGROUP GROUP g STREAMS s >
XINFO GROUPS s
XPENDING s g
XPENDING s g - + 10
XPENDING s nog
XPENDING nokey g
XPENDING s g - + 10 c1
XPENDING s g - + 10 c2
XPENDING s g (1 (3 10
XPENDING s g - + 0
XPENDING s g - + -1
XPENDING s g IDLE 0 - + 10
XPENDING s g IDLE 100000 - + 10
XPENDING s g IDLE 0 - + 10 c1
XPENDING s g - +
XPENDING s g - + x
XPENDING s g x + 10
XPENDING s g IDLE x - + 10
XPENDING s g IDLE 5 - +
XACK s g 1 1 5
XACK s nog 1
XACK nokey g 1
XACK s g bad
XACK s g 2 bad
XPENDING s g
XPENDING s g2
XDEL s 2
XREADGROUP GROUP g c1 STREAMS s 0
XPENDING s g - + 10
XINFO GROUPS s
XINFO CONSUMERS s g
XINFO CONSUMERS s g2
XINFO CONSUMERS s nog
# groups: XCLAIM
XADD s 1 a 1
XADD s 2 b 2
XADD s 3 c 3
XGROUP CREATE s g 0
XREADGROUP GROUP g c1 STREAMS s >
XCLAIM s g c2 0 1 2
XPENDING s g - + 10
XCLAIM s g c2 100000 3
XCLAIM s g c2 0 3 JUSTID
XPENDING s g - + 10
XCLAIM s g c2 0 3 RETRYCOUNT 7 JUSTID
XCLAIM s g c2 0 3 RETRYCOUNT x
XCLAIM s g c2 0 3 IDLE x
XCLAIM s g c2 0 3 TIME x
XCLAIM s g c2 x 3
XCLAIM s g c2 0 3 FOO
XCLAIM s g c2 0 3 LASTID bad
XCLAIM s nog c2 0 3
XCLAIM nokey g c2 0 3
XDEL s 1
XCLAIM s g c3 0 1 2
XPENDING s g
XCLAIM s g c3 0 9 FORCE
XCLAIM s g c3 0 3 FORCE JUSTID
XADD s 4 d 4
XCLAIM s g c3 0 4 FORCE
XCLAIM s g c3 0 4 FORCE
XPENDING s g - + 10
XCLAIM s g c3 0 3 LASTID 50 JUSTID
XINFO GROUPS s
XCLAIM s g c4 0 3 4 IDLE 100000000 JUSTID
XPENDING s g IDLE 90000000 - + 10
XCLAIM s g c4 0 bad 3
XINFO CONSUMERS s g
# groups: XAUTOCLAIM
XADD s 1 a 1
XADD s 2 b 2
XADD s 3 c 3
XADD s 4 d 4
XGROUP CREATE s g 0
XREADGROUP GROUP g c1 STREAMS s >
XDEL s 2
XAUTOCLAIM s g c2 0 0 COUNT 1
XAUTOCLAIM s g c2 0 0 COUNT 2
XAUTOCLAIM s g c2 0 0
XAUTOCLAIM s g c3 0 (1 JUSTID
XAUTOCLAIM s g c3 100000 0
XAUTOCLAIM s g c3 0 0 COUNT 0
XAUTOCLAIM s g c3 0 0 COUNT x
XAUTOCLAIM s g c3 0 0 FOO
XAUTOCLAIM s g c3 x 0
XAUTOCLAIM s g c3 0 bad
XAUTOCLAIM s nog c3 0 0
XAUTOCLAIM nokey g c3 0 0
XPENDING s g
XINFO CONSUMERS s g
# groups: consumers
XADD s 1 a 1
XADD s 2 b 2
XGROUP CREATE s g 0
XGROUP CREATECONSUMER s g c1
XGROUP CREATECONSUMER s g c1
XREADGROUP GROUP g c2 STREAMS s >
XINFO CONSUMERS s g
XGROUP DELCONSUMER s g c2
XGROUP DELCONSUMER s g c2
XGROUP DELCONSUMER s g zz
XPENDING s g
XGROUP SETID s g 0
XGROUP SETID s g $ ENTRIESREAD 2
XGROUP SETID s g - ENTRIESREAD 5
XGROUP SETID s g bad
XINFO GROUPS s
XREADGROUP GROUP g c3 STREAMS s >
XGROUP DESTROY s g
XINFO GROUPS s
XINFO STREAM s FULL
XINFO STREAM s FULL COUNT 1
XINFO STREAM s FULL COUNT
XINFO STREAM s FULL COUNT x
XINFO STREAM s FOO
XINFO STREAM s FULL FOO 1
XINFO STREAM nokey
XINFO FOO s
XINFO HELP
XINFO
# lag and entries-read across deletions
XADD s 1 a 1
XADD s 2 a 2
XADD s 3 a 3
XADD s 4 a 4
XGROUP CREATE s g 0
XGROUP CREATE s h 0
XREADGROUP GROUP g c COUNT 1 STREAMS s >
XINFO GROUPS s
XDEL s 3
XINFO GROUPS s
XREADGROUP GROUP g c COUNT 1 STREAMS s >
XINFO GROUPS s
XREADGROUP GROUP g c STREAMS s >
XINFO GROUPS s
XDEL s 1
XINFO GROUPS s
XTRIM s MAXLEN 0
XINFO GROUPS s
XINFO STREAM s FULL
# streams in other databases: SELECT, MOVE, SWAPDB, COPY ... DB
SELECT 1
XADD s 1 a 1
XGROUP CREATE s g 0
XREADGROUP GROUP g c STREAMS s >
SELECT 0
XLEN s
XADD s 5 b 2
XRANGE s - +
SELECT 1
XRANGE s - +
XPENDING s g
MOVE s 0
MOVE s 2
SELECT 2
XINFO STREAM s FULL
XADD s 2 c 3
COPY s t DB 3
SWAPDB 2 0
XRANGE s - +
SELECT 0
XRANGE s - +
XPENDING s g - + 10
SELECT 3
XINFO GROUPS t
FLUSHDB
SELECT 0
XLEN s
# a stream among the other types
XADD s 1 a 1
XGROUP CREATE s g 0
XREADGROUP GROUP g c STREAMS s >
TYPE s
OBJECT ENCODING s
EXPIRE s 100
TTL s
RENAME s t
XRANGE t - +
XPENDING t g
COPY t u
XINFO STREAM u FULL
DEL t
SCAN 0 TYPE stream
SCAN 0 TYPE string
EXISTS t u
SET str x
XADD str 1 a b
XRANGE str - +
XLEN str
XREAD STREAMS str 0
XREADGROUP GROUP g c STREAMS str >
XGROUP CREATE str g $ MKSTREAM
XINFO STREAM str
XACK str g 1
XPENDING str g
XCLAIM str g c 0 1
XTRIM str MAXLEN 1
XDEL str 1
XSETID str 1
LPUSH u x
GET u
SORT u
"""


def corpus_blocks() -> list[list[str]]:
    return split_corpus(CORPUS)


# ---- random sequences ---------------------------------------------------------------------------

KEYS = ["s0", "s1"]
GROUPS = ["g0", "g1"]
CONSUMERS = ["c0", "c1", "c2"]


def _rid(rng: random.Random) -> str:
    """An id among those the sequence has used so far (some incomplete), to range, delete, ack or claim."""
    top = getattr(rng, "clock", 12)
    ms = rng.randint(max(0, top - 30), top)
    return str(ms) if rng.random() < 0.3 else f"{ms}-{rng.randint(0, 2)}"


def _new_id(rng: random.Random) -> str:
    """XADD's id: mostly after everything so far (a clock the sequence carries), now and then an old one."""
    if rng.random() < 0.15:
        return _rid(rng)
    clock = getattr(rng, "clock", 12) + rng.randint(0, 2)
    rng.clock = clock  # type: ignore[attr-defined]
    return rng.choice([str(clock), f"{clock}-{rng.randint(0, 2)}", f"{clock}-*"])


def random_command(rng: random.Random) -> list[str]:
    key = rng.choice(KEYS)
    group = rng.choice(GROUPS)
    consumer = rng.choice(CONSUMERS)
    roll = rng.random()
    if roll < 0.25:
        trim: list[str] = []
        if rng.random() < 0.15:
            trim = ["MAXLEN", "=", str(rng.randint(0, 12))] if rng.random() < 0.5 else ["MINID", _rid(rng)]
        return ["XADD", key, *trim, _new_id(rng), "f", str(rng.randint(0, 9))] + (["g", "h"] if rng.random() < 0.2 else [])
    if roll < 0.35:
        lo, hi = sorted([_rid(rng), _rid(rng)])
        lo = rng.choice(["-", lo, "(" + lo])
        hi = rng.choice(["+", hi, "(" + hi])
        name, a, b = ("XRANGE", lo, hi) if rng.random() < 0.6 else ("XREVRANGE", hi, lo)
        return [name, key, a, b] + (["COUNT", str(rng.randint(0, 4))] if rng.random() < 0.4 else [])
    if roll < 0.40:
        return ["XDEL", key] + [_rid(rng) for _ in range(rng.randint(1, 3))]
    if roll < 0.43:
        if rng.random() < 0.5:
            return ["XTRIM", key, "MAXLEN", "=", str(rng.randint(0, 12))]
        return ["XTRIM", key, "MINID", "=", _rid(rng)]
    if roll < 0.48:
        return ["XREAD"] + (["COUNT", str(rng.randint(0, 3))] if rng.random() < 0.5 else []) + \
            ["STREAMS", *KEYS, _rid(rng), rng.choice(["$", _rid(rng)])]
    if roll < 0.55:
        sub = rng.choice(["CREATE", "CREATE", "SETID", "DESTROY", "CREATECONSUMER", "DELCONSUMER"])
        if sub in ("CREATE", "SETID"):
            extra = ["MKSTREAM"] if sub == "CREATE" and rng.random() < 0.5 else []
            if rng.random() < 0.3:
                extra += ["ENTRIESREAD", str(rng.randint(-1, 5))]
            return ["XGROUP", sub, key, group, rng.choice(["$", "0", _rid(rng)]), *extra]
        if sub == "DESTROY":
            return ["XGROUP", sub, key, group]
        return ["XGROUP", sub, key, group, consumer]
    if roll < 0.68:
        opts = (["COUNT", str(rng.randint(0, 3))] if rng.random() < 0.5 else []) + \
            (["NOACK"] if rng.random() < 0.1 else [])
        ids = [">" if rng.random() < 0.7 else rng.choice(["0", _rid(rng)])]
        return ["XREADGROUP", "GROUP", group, consumer, *opts, "STREAMS", key, *ids]
    if roll < 0.74:
        return ["XACK", key, group] + [_rid(rng) for _ in range(rng.randint(1, 3))]
    if roll < 0.80:
        if rng.random() < 0.4:
            return ["XPENDING", key, group]
        return ["XPENDING", key, group, "-", "+", str(rng.randint(0, 5))] + ([consumer] if rng.random() < 0.4 else [])
    if roll < 0.86:
        opts = [o for o in ("JUSTID", "FORCE") if rng.random() < 0.3]
        if rng.random() < 0.2:
            opts += ["RETRYCOUNT", str(rng.randint(0, 3))]
        if rng.random() < 0.2:
            opts += ["LASTID", _rid(rng)]
        return ["XCLAIM", key, group, consumer, rng.choice(["0", "0", "100000"]), _rid(rng), _rid(rng), *opts]
    if roll < 0.90:
        return ["XAUTOCLAIM", key, group, consumer, "0", rng.choice(["0", _rid(rng)]), "COUNT",
                str(rng.randint(1, 3))] + (["JUSTID"] if rng.random() < 0.3 else [])
    if roll < 0.96:
        return rng.choice([["XINFO", "STREAM", key], ["XINFO", "STREAM", key, "FULL"], ["XINFO", "GROUPS", key],
                           ["XINFO", "CONSUMERS", key, group], ["XLEN", key]])
    if roll < 0.98:
        return ["XSETID", key, _rid(rng)]
    return rng.choice([["DEL", key], ["TYPE", key], ["EXISTS", key], ["COPY", key, "s1" if key == "s0" else "s0"]])


def _check_streams(pair: Any, where: str) -> None:
    """After a seed or a block: every stream whole, its groups and PELs the same on both sides."""
    for key in KEYS + ["s", "t", "u"]:
        pair.run(cmd(f"XRANGE {key} - +"), where)
        pair.run(cmd(f"XINFO STREAM {key} FULL"), where)


# ---- tests: in-process --------------------------------------------------------------------------

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("protocol", [2, 3])
async def test_corpus(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    """The edge cases, the buffer flushed every few lines so reads merge SQLite with the memtables."""
    async def body(pair: Any, engine: Engine) -> None:
        await corpus_in_process(pair, engine, corpus_blocks(), flush_every=5, after_block=_check_streams)
    await with_engine_pair(Pair, redis_socket, tmp_path, protocol, body)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_random_sequences(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async def body(pair: Any, engine: Engine) -> None:
        await random_in_process(pair, engine, random_command, seeds=SEEDS, steps=STEPS, flush_chance=0.05,
                                after_seed=_check_streams, seed_base=7000)
    await with_engine_pair(Pair, redis_socket, tmp_path, protocol, body)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_generated_ids(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    """``*`` and ``ms-*``: well-formed, increasing, the engine's clock; ``~`` trims keep the newest entries."""
    async with Engine(str(tmp_path / "data")) as engine:
        pair = Pair(redis_socket, engine, protocol)
        try:
            last = (0, 0)
            for n in range(50):
                raw = pair.memd.call(cmd("XADD s * n %d" % n))
                m = re.fullmatch(rb"\$\d+\r\n(\d+)-(\d+)\r\n", raw)
                assert m, raw
                sid = (int(m[1]), int(m[2]))
                assert sid > last
                last = sid
                if n == 25:
                    await engine.flush()
            assert abs(last[0] - engine.now_ms()) < TOLERANCE_MS
            assert pair.memd.call(cmd("XADD s %d-* a b" % last[0])) == b"$%d\r\n%d-%d\r\n" % (
                len(b"%d-%d" % (last[0], last[1] + 1)), last[0], last[1] + 1)
            # ~: Redis keeps whole nodes, memd exactly the bound; both keep the newest entries
            for side in (pair.redis, pair.memd):
                side.call(cmd("DEL t"))
                for n in range(1, 301):
                    side.call(cmd(f"XADD t {n} f {n}"))
            kept = {}
            for name, side in (("redis", pair.redis), ("memd", pair.memd)):
                side.call(cmd("XTRIM t MAXLEN ~ 150"))
                side.call(cmd("XADD t MINID ~ 120 301 f x"))
                kept[name] = int(side.call(cmd("XLEN t"))[1:-2])
                assert side.call(cmd("XREVRANGE t + - COUNT 1")).count(b"301-0") == 1
            assert kept["memd"] == 151 <= kept["redis"], kept  # 151..300 after the trim, then 301
        finally:
            pair.close()


# ---- tests: over a real daemon (pipelines, MULTI/EXEC) -------------------------------------------

@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def daemon_pair(request: pytest.FixtureRequest, redis_socket: str, memd_socket: str) -> Iterator[ServerPair]:
    p = ServerPair(redis_socket, memd_socket, request.param)
    p.run(cmd("FLUSHALL"), "setup")
    try:
        yield p
    finally:
        p.close()


def test_corpus_over_daemon(daemon_pair: ServerPair) -> None:
    corpus_over_daemon(daemon_pair, corpus_blocks(), flush_every=7, after_block=_check_streams)


def test_corpus_pipelined(daemon_pair: ServerPair) -> None:
    corpus_over_daemon(daemon_pair, corpus_blocks(), pipelined=True, after_block=_check_streams)


TX_CORPUS = r"""
MULTI
XADD s 1 a 1
XGROUP CREATE s g 0
XREADGROUP GROUP g c STREAMS s >
XREAD BLOCK 0 STREAMS s $
XREAD BLOCK 10 STREAMS s 0
XPENDING s g
XACK s g 1
XADD s 1 dup 1
XLEN s
EXEC
XINFO GROUPS s
MULTI
XADD s 2 b 2
XREADGROUP GROUP g c BLOCK 0 STREAMS s >
XCLAIM s g d 0 2
XAUTOCLAIM s g e 0 0
XINFO CONSUMERS s g
EXEC
XPENDING s g - + 10
"""


def test_transactions(daemon_pair: ServerPair) -> None:
    """Streams inside MULTI/EXEC, XREAD BLOCK included (Redis never blocks there: nil when nothing is new)."""
    for block in split_corpus(TX_CORPUS):
        for line in block:
            daemon_pair.run(cmd(line), "tx corpus")
    daemon_pair.assert_clean()


def test_random_over_daemon(daemon_pair: ServerPair) -> None:
    """Seeded sequences with transactions and pipelined batches of stream commands."""
    def step(rng: random.Random, where: str) -> None:
        roll = rng.random()
        if roll < 0.1:
            daemon_pair.run([b"MULTI"], where + " tx")
            for _ in range(rng.randint(1, 5)):
                daemon_pair.run([a.encode() for a in random_command(rng)], where + " tx")
            daemon_pair.run([b"EXEC"], where + " tx")
        elif roll < 0.2:
            daemon_pair.pipeline([[a.encode() for a in random_command(rng)] for _ in range(rng.randint(2, 10))],
                                 where + " batch")
        else:
            daemon_pair.run([a.encode() for a in random_command(rng)], where)
    random_over_daemon(daemon_pair, step, seeds=max(2, SEEDS // 2), steps=STEPS, seed_base=7500,
                       flush_chance=0.03, after_seed=_check_streams)


def test_block_waits_then_times_out(memd_socket: str) -> None:
    """XREAD / XREADGROUP BLOCK that would wait park the client: a null array after the timeout
    (the multi-client cases: test_differential_xblock.py)."""
    c = server.Conn(memd_socket, 2)
    try:
        c.call(cmd("DEL s"))
        t0 = time.monotonic()
        assert c.call(cmd("XREAD BLOCK 100 STREAMS s $")) == b"*-1\r\n"
        assert time.monotonic() - t0 >= 0.09
        c.call(cmd("XADD s 1 a b"))
        assert c.call(cmd("XREAD BLOCK 100 STREAMS s 0")).startswith(b"*1\r\n")  # served at once
        c.call(cmd("XGROUP CREATE s g $"))
        assert c.call(cmd("XREADGROUP GROUP g c BLOCK 100 STREAMS s >")) == b"*-1\r\n"
    finally:
        c.close()
