"""Differential test of the string family against a real redis-server 7.0, byte for byte.

GETRANGE/SUBSTR, SETRANGE, APPEND, INCRBYFLOAT and HINCRBYFLOAT, the bit
commands (SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD BITFIELD_RO) and LCS, next to the string
commands they mix with (SET, GETEX, GETDEL, SETNX, MSETNX...):

- a corpus of edge cases (argument and type checks in Redis's order, the
  512 MB limit, negative ranges, BIT/BYTE units, LCS's options...), through
  memd's handlers in-process and through a real daemon, on RESP2 and RESP3;
- seeded random sequences over a small key space, in-process with flushes
  to SQLite in between, and through a daemon with MULTI/EXEC transactions;
- thousands of random INCRBYFLOAT/HINCRBYFLOAT operands (integers,
  decimals of up to 17 significant digits, exponents, hexadecimal, huge
  and tiny ones, refused spellings): the reply and the stored text must be
  Redis's, digit for digit;
- the new writes survive a crash: a daemon killed with SIGKILL replays its
  WAL and answers what Redis answers.

The fixtures and the comparison come from test_differential_handlers.py and
test_differential_server.py. redis-server is a hard requirement: without it
this test fails, it does not skip.
"""

from __future__ import annotations

import codecs
import random
import shlex
from pathlib import Path
from typing import Any

import pytest

import memd.commands.bitfield  # noqa: F401  (each module registers its commands)
import memd.commands.bits  # noqa: F401
import memd.commands.lcs  # noqa: F401
from memd.engine.engine import Engine
from tests.integration.daemon import Daemon
from tests.integration.diffkit import (
    corpus_in_process,
    corpus_over_daemon,
    random_in_process,
    random_over_daemon,
    split_corpus,
)
from tests.integration.test_differential_handlers import Pair as HandlerPair
from tests.integration.test_differential_handlers import (  # noqa: F401  (redis_socket is a fixture)
    _run,
    redis_socket,
)
from tests.integration.test_differential_server import Pair as ServerPair
from tests.integration.test_differential_server import memd_socket, pair  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

SEEDS = 10
STEPS = 300


def bcmd(line: str) -> list[bytes]:
    """A corpus line: shell words, then Python escapes (``"\\xff"``) inside each."""
    return [codecs.escape_decode(word.encode("utf-8"))[0] for word in shlex.split(line)]  # type: ignore[misc]


# ---- fixed corpus -----------------------------------------------------------------------------

CORPUS = r"""
# GETRANGE and SUBSTR
SET s "Hello World"
GETRANGE s 0 4
GETRANGE s -5 -1
GETRANGE s -1 -5
GETRANGE s -100 -1
GETRANGE s -100 -200
GETRANGE s 0 100
GETRANGE s 5 3
GETRANGE s 100 200
GETRANGE s -1 0
GETRANGE s 0 -100
GETRANGE s 10 10
GETRANGE s 11 11
GETRANGE s 9223372036854775807 9223372036854775807
GETRANGE s -9223372036854775808 9223372036854775807
GETRANGE s 9223372036854775808 1
GETRANGE s a 1
GETRANGE s 1 b
GETRANGE s 1.5 2
GETRANGE nokey 0 -1
GETRANGE nokey a b
GETRANGE nokey 0 a
SUBSTR s 0 2
SUBSTR s -3 -1
SUBSTR s 3 1
SUBSTR nokey 0 1
SET n 12345
GETRANGE n 1 2
SET e ""
GETRANGE e 0 -1
GETRANGE e 0 0
GETRANGE e -1 -1
HSET h f v
GETRANGE h 0 1
GETRANGE h a 1
SUBSTR h 0 1
GETRANGE s 0
GETRANGE s 0 1 2
SUBSTR s 0
SET bin "a\x00b\xffc"
GETRANGE bin 1 3
# SETRANGE
SETRANGE k 0 abc
SETRANGE k 5 xyz
GET k
SETRANGE k 1 ""
SETRANGE k 100 ""
GET k
SETRANGE k 2 Z
GET k
SETRANGE k 0 "longer than before"
GET k
SETRANGE nokey 10 ""
EXISTS nokey
SETRANGE nokey 0 ""
EXISTS nokey
SETRANGE nokey2 3 "\x00"
GET nokey2
SETRANGE k -1 x
SETRANGE k abc x
SETRANGE k 1.5 x
SETRANGE k "" x
SETRANGE k 536870911 ""
SETRANGE k 536870912 x
SETRANGE k 536870911 xx
SETRANGE k 536870912 ""
SETRANGE nokey 536870912 x
SETRANGE nokey 536870912 ""
SETRANGE nokey 536870911 xy
EXISTS nokey
SETRANGE k 9223372036854775807 x
SETRANGE k 9223372036854775808 x
SETRANGE k -9223372036854775808 x
SETRANGE h 0 x
SETRANGE h -1 x
SETRANGE h 0 ""
SETRANGE h a x
SET ttl v EX 100
SETRANGE ttl 3 w
TTL ttl
GET ttl
SET num 100
SETRANGE num 1 5
INCR num
GET num
SETRANGE k 1
SETRANGE k 1 a b
# APPEND and STRLEN
APPEND a ""
EXISTS a
STRLEN a
APPEND a abc
APPEND a "\x00\xff"
GET a
STRLEN a
APPEND h x
STRLEN h
SET t v EX 100
APPEND t x
TTL t
GET t
SET i 10
APPEND i 5
INCR i
# INCRBYFLOAT
INCRBYFLOAT f 10.5
INCRBYFLOAT f 0.1
INCRBYFLOAT f -5
INCRBYFLOAT f 5.0e3
INCRBYFLOAT f 2.0e-2
INCRBYFLOAT f abc
INCRBYFLOAT f ""
INCRBYFLOAT f " 1"
INCRBYFLOAT f "1 "
INCRBYFLOAT f "1\x00"
INCRBYFLOAT f inf
INCRBYFLOAT f -inf
INCRBYFLOAT f +INF
INCRBYFLOAT f Infinity
INCRBYFLOAT f nan
INCRBYFLOAT f -nan
INCRBYFLOAT f "nan(1)"
INCRBYFLOAT f 1e5000
INCRBYFLOAT f -1e5000
INCRBYFLOAT f 1e-5000
INCRBYFLOAT f 0e-5000
INCRBYFLOAT f 0e99999999999999999999
INCRBYFLOAT f 1e-4951
INCRBYFLOAT f 4e-4951
INCRBYFLOAT f 0x10
INCRBYFLOAT f 0X1P-2
INCRBYFLOAT f 0x.8p1
INCRBYFLOAT f 0x
INCRBYFLOAT f 0x1p
INCRBYFLOAT f 1_0
INCRBYFLOAT f +1
INCRBYFLOAT f .5
INCRBYFLOAT f 5.
INCRBYFLOAT f .
INCRBYFLOAT f 1e
INCRBYFLOAT f e1
INCRBYFLOAT f --1
INCRBYFLOAT f "\xd9\xa1"
GET f
INCRBYFLOAT z 0.1
INCRBYFLOAT z 0.2
INCRBYFLOAT z -0.3
INCRBYFLOAT z 1e-17
INCRBYFLOAT z 5e-18
INCRBYFLOAT neg -0
GET neg
INCRBYFLOAT neg -1e-30
INCRBYFLOAT tie 0.000003814697265625
INCRBYFLOAT tie2 0.000011444091796875
INCRBYFLOAT long 1.23456789012345678901234567890
INCRBYFLOAT long 12345678901234567890
INCRBYFLOAT long 3.0e3
SET d 1.7976931348623157e308
INCRBYFLOAT d 1.7976931348623157e308
SET big 1.1e4932
INCRBYFLOAT big 1e4932
INCRBYFLOAT big -1e4932
INCRBYFLOAT big -1.1e4932
SET huge 1e4000
INCRBYFLOAT huge 1
SET max 9223372036854775807
INCRBYFLOAT max 1
SET min -9223372036854775808
INCRBYFLOAT min -1
SET sinf inf
INCRBYFLOAT sinf 1
SET sinf -inf
INCRBYFLOAT sinf inf
SET x abc
INCRBYFLOAT x 1
INCRBYFLOAT x abc
SET x "1.5 "
INCRBYFLOAT x 1
SET x "  1"
INCRBYFLOAT x 1
SET x 0x10
INCRBYFLOAT x 1
SET x 1e3
INCRBYFLOAT x 0
SET x 00012.500
INCRBYFLOAT x 0
INCRBYFLOAT h 1
INCRBYFLOAT h abc
SET t 1 EX 100
INCRBYFLOAT t 1.5
TTL t
INCRBYFLOAT t
INCRBYFLOAT t 1 2
# HINCRBYFLOAT
HINCRBYFLOAT h f 10.5
HINCRBYFLOAT h f 0.1
HINCRBYFLOAT h f abc
HINCRBYFLOAT h f inf
HINCRBYFLOAT h f -inf
HINCRBYFLOAT h f nan
HINCRBYFLOAT h f 1e5000
HINCRBYFLOAT h f ""
HINCRBYFLOAT h f 0x10
HSET h g abc
HINCRBYFLOAT h g 1
HINCRBYFLOAT h g abc
HSET h i inf
HINCRBYFLOAT h i 1
HSET h j 1.1e4932
HINCRBYFLOAT h j 1e4932
HSET h k 5
HINCRBYFLOAT h k 1.5
HSET h l " 1"
HINCRBYFLOAT h l 1
HGETALL h
SET s v
HINCRBYFLOAT s f 1
HINCRBYFLOAT s f abc
HINCRBYFLOAT s f inf
HINCRBYFLOAT newh f 1.5
HLEN newh
HINCRBYFLOAT newh f2 -0
HGETALL newh
EXPIRE h 100
HINCRBYFLOAT h f 1
TTL h
HINCRBYFLOAT h f
HINCRBYFLOAT h f 1 2
# SETBIT and GETBIT
SETBIT b 7 1
GET b
SETBIT b 7 0
SETBIT b 7 0
GETBIT b 7
GETBIT b 100
GETBIT nokey 0
GETBIT nokey -1
GETBIT nokey abc
SETBIT b 0 2
SETBIT b 0 -1
SETBIT b 0 abc
SETBIT b 0 ""
SETBIT b 0 01
SETBIT b -1 1
SETBIT b abc 1
SETBIT b 1.0 1
SETBIT b 4294967296 1
SETBIT b 9223372036854775807 1
GETBIT b 4294967295
GETBIT b 4294967296
SETBIT zeros 100 0
STRLEN zeros
GET zeros
SETBIT zeros 7 0
SETBIT zeros 200 1
GETBIT zeros 200
STRLEN zeros
HSET h f v
SETBIT h 0 1
SETBIT h -1 1
SETBIT h 0 5
GETBIT h 0
GETBIT h -1
SET n 12345
GETBIT n 2
SETBIT n 2 0
GET n
SET t v EX 100
SETBIT t 0 1
TTL t
SETBIT t 50 1
TTL t
SETBIT b 0
GETBIT b
# BITCOUNT
SET mykey foobar
BITCOUNT mykey
BITCOUNT mykey 0 0
BITCOUNT mykey 1 1
BITCOUNT mykey 1 1 BYTE
BITCOUNT mykey 5 30 BIT
BITCOUNT mykey 5 30 bit
BITCOUNT mykey -1 -1
BITCOUNT mykey -1 -2
BITCOUNT mykey -2 -1 BIT
BITCOUNT mykey -1 -2 FOO
BITCOUNT mykey 0 -1 FOO
BITCOUNT mykey 0
BITCOUNT mykey 0 1 BIT extra
BITCOUNT mykey a b
BITCOUNT mykey 0 b
BITCOUNT mykey a b FOO
BITCOUNT nokey a b
BITCOUNT nokey 0
BITCOUNT nokey 0 1 FOO
HSET h f v
BITCOUNT h
BITCOUNT h a
BITCOUNT mykey 0 100
BITCOUNT mykey 100 200
BITCOUNT mykey 0 1000 BIT
BITCOUNT mykey 7 7 BIT
BITCOUNT mykey 8 8 BIT
BITCOUNT mykey 47 47 BIT
BITCOUNT mykey 47 100 BIT
BITCOUNT mykey 3 2 BIT
BITCOUNT mykey -9223372036854775808 9223372036854775807 BIT
BITCOUNT mykey -9223372036854775808 9223372036854775807
BITCOUNT mykey 9223372036854775807 -9223372036854775808
SET e ""
BITCOUNT e
BITCOUNT e 0 -1
BITCOUNT e 0 -1 BIT
SET n 12345
BITCOUNT n
BITCOUNT n 1 2 BIT
# BITPOS
SET k "\xff\xf0\x00"
BITPOS k 0
BITPOS k 1
SET k "\x00\xff\xf0"
BITPOS k 1 0
BITPOS k 1 2
BITPOS k 1 2 -1 BYTE
BITPOS k 1 7 15 BIT
BITPOS k 0 8 -1 BIT
BITPOS k 0 8 15 BIT
BITPOS k 0 8 19 BIT
BITPOS k 0 -4 -1 BIT
BITPOS k 1 -100 -50 BIT
BITPOS k 1 3 1
BITPOS k 1 -1
BITPOS k 0 -1
BITPOS k 0 5
BITPOS k 1 1 1
BITPOS k 1 9 9 bit
SET k "\x00\x00\x00"
BITPOS k 1
BITPOS k 0
BITPOS k 1 0 -1
SET ones "\xff\xff\xff"
BITPOS ones 0
BITPOS ones 0 0
BITPOS ones 0 1
BITPOS ones 0 0 -1
BITPOS ones 0 0 100
BITPOS ones 0 0 -1 BIT
BITPOS ones 0 0 -1 BYTE
BITPOS ones 1 0 -1 BIT
BITPOS ones 0 2 1
BITPOS nokey 1
BITPOS nokey 0
BITPOS nokey 2
BITPOS nokey a
BITPOS nokey 1 a b c d
BITPOS nokey 0 0 1 FOO
BITPOS k 1 a
BITPOS k 1 0 a
BITPOS k 1 0 1 FOO
BITPOS k 1 a 1 FOO
BITPOS k 1 0 a FOO
BITPOS k 1 0 1 BIT x
BITPOS k -1
BITPOS k 01
HSET h f v
BITPOS h 1
BITPOS h 2
BITPOS h a
SET e ""
BITPOS e 0
BITPOS e 1
BITPOS e 0 0
BITPOS e 0 0 -1 BIT
SET n 12345
BITPOS n 0
BITPOS n 1 3
BITPOS n 1 3 20 BIT
BITPOS k
# BITOP
SET a foobar
SET b abcdef
BITOP AND dest a b
GET dest
BITOP OR dest a b
GET dest
BITOP XOR dest a b
GET dest
BITOP NOT dest a
GET dest
BITOP not dest a b
BITOP NOT dest nokey
EXISTS dest
BITOP NOT dest
BITOP FOO dest a
BITOP "" dest a
SET short ab
BITOP AND dest a short
GET dest
BITOP OR dest short a
GET dest
BITOP XOR dest a short nokey
GET dest
BITOP AND dest a nokey
GET dest
SET dest x
BITOP AND dest nokey nokey2
EXISTS dest
BITOP OR dest nokey
SET dest x EX 100
BITOP OR dest a
TTL dest
HSET h f v
BITOP AND dest a h
BITOP AND dest h a
BITOP AND h a
TYPE h
GET h
BITOP XOR dest a a
GET dest
BITOP AND dest a a a a a a a a a a a a a a a a a a a a a
GET dest
SET e ""
BITOP OR dest e e
EXISTS dest
BITOP NOT dest e
SET long "0123456789abcdef0123456789abcdef0123456789"
BITOP AND dest long a b
GET dest
BITOP NOT dest long
GET dest
BITOP XOR dest long dest
GET dest
# LCS
MSET key1 ohmytext key2 mynewtext
LCS key1 key2
LCS key1 key2 LEN
LCS key1 key2 IDX
LCS key1 key2 IDX MINMATCHLEN 4
LCS key1 key2 IDX MINMATCHLEN 4 WITHMATCHLEN
LCS key1 key2 IDX WITHMATCHLEN
LCS key1 key2 idx withmatchlen minmatchlen 2
LCS key1 key2 WITHMATCHLEN
LCS key1 key2 LEN WITHMATCHLEN
LCS key1 key2 LEN IDX
LCS key1 key2 idx len
LCS key1 key2 MINMATCHLEN
LCS key1 key2 MINMATCHLEN abc
LCS key1 key2 MINMATCHLEN -5 IDX
LCS key1 key2 MINMATCHLEN 100 IDX
LCS key1 key2 BOGUS
LCS key1 key2 LEN LEN
LCS key1 nokey
LCS nokey nokey IDX
LCS key1 nokey LEN
LCS key1 key1 IDX WITHMATCHLEN
LCS key2 key1 IDX
HSET h f v
LCS key1 h
LCS h nokey BOGUS
LCS nokey h LEN
LCS key1
MSET a "GATTACAGATTACA" b "TAGACCATAGA"
LCS a b
LCS b a
LCS a b IDX WITHMATCHLEN
LCS b a IDX WITHMATCHLEN
MSET a "a\x00b\xffc" b "\x00\xff"
LCS a b
LCS a b IDX
SET e ""
LCS e a
LCS e e IDX
# BITFIELD and BITFIELD_RO
BITFIELD bf SET i8 0 100 GET i8 0
BITFIELD bf INCRBY i5 100 1 GET u4 0
BITFIELD bf OVERFLOW SAT INCRBY u2 102 1 OVERFLOW WRAP INCRBY u2 102 1 OVERFLOW FAIL INCRBY u2 102 5
BITFIELD bf SET u8 #1 200 GET u8 #1 GET u8 8
GET bf
BITFIELD bf GET i64 0
BITFIELD bf GET u64 0
BITFIELD bf GET u63 0
BITFIELD bf GET i65 0
BITFIELD bf GET i0 0
BITFIELD bf GET I8 0
BITFIELD bf GET x8 0
BITFIELD bf GET i08 0
BITFIELD bf GET "i8\x00x" 0
BITFIELD bf GET "" 0
BITFIELD bf GET i8 -1
BITFIELD bf GET i8 "#-1"
BITFIELD bf GET i8 "#"
BITFIELD bf GET i8 "##1"
BITFIELD bf GET i8 4294967296
BITFIELD bf GET i8 4294967295
BITFIELD bf GET i8 "#536870912"
BITFIELD bf GET i8 "#536870911"
BITFIELD bf GET i8 "#9223372036854775807"
BITFIELD bf GET i8 "#2305843009213693952"
BITFIELD bf GET i8 1.5
BITFIELD bf SET i8 0 abc
BITFIELD bf SET i8 0 9223372036854775808
BITFIELD bf SET i8 0
BITFIELD bf GET i8
BITFIELD bf FOO
BITFIELD bf OVERFLOW
BITFIELD bf OVERFLOW BAD GET i8 0
BITFIELD bf GET i8 0 OVERFLOW FOO
BITFIELD bf GET i8 0 FOO
BITFIELD bf GET u64 0 FOO
BITFIELD bf
BITFIELD nokey GET i8 0
EXISTS nokey
BITFIELD nokey OVERFLOW FAIL INCRBY u2 0 10
EXISTS nokey
GET nokey
BITFIELD nokey2 OVERFLOW SAT
EXISTS nokey2
BITFIELD bf OVERFLOW SAT SET i8 0 -9223372036854775808 GET i8 0
BITFIELD bf OVERFLOW SAT SET i8 0 9223372036854775807 GET i8 0
BITFIELD bf OVERFLOW WRAP SET i8 0 -9223372036854775808 GET i8 0
BITFIELD bf OVERFLOW SAT SET u8 0 -1 GET u8 0
BITFIELD bf OVERFLOW WRAP SET u8 0 -1 GET u8 0
BITFIELD bf OVERFLOW FAIL SET u8 0 -1 GET u8 0
BITFIELD bf OVERFLOW FAIL SET u8 0 255 SET i8 0 -129 SET i8 0 -128
BITFIELD bf OVERFLOW SAT INCRBY i64 0 9223372036854775807 INCRBY i64 0 9223372036854775807
BITFIELD bf OVERFLOW WRAP INCRBY i64 0 9223372036854775807
BITFIELD bf OVERFLOW SAT INCRBY i64 0 -9223372036854775808 INCRBY i64 0 -9223372036854775808
BITFIELD bf OVERFLOW FAIL INCRBY i64 0 -9223372036854775808 INCRBY i64 0 -9223372036854775808
BITFIELD bf OVERFLOW SAT INCRBY u63 0 -9223372036854775808
BITFIELD bf INCRBY u63 0 9223372036854775807 INCRBY u63 0 9223372036854775807
BITFIELD bf OVERFLOW SAT INCRBY u63 0 9223372036854775807 INCRBY u63 0 1
BITFIELD bf SET i1 3 -1 GET u1 3 INCRBY i1 3 1 GET i1 3
BITFIELD bf get i8 0 set i8 0 1 incrby i8 0 1 overflow sat
HSET h f v
BITFIELD h GET i8 0
BITFIELD h SET i8 0 1
BITFIELD h GET i8 -1
BITFIELD h OVERFLOW SAT
BITFIELD_RO bf GET i8 0 GET u4 4
BITFIELD_RO bf SET i8 0 1
BITFIELD_RO bf INCRBY i8 0 1 GET i8 0
BITFIELD_RO bf GET i8 0 SET i8 0
BITFIELD_RO h GET i8 0
BITFIELD_RO h SET i8 0 1
BITFIELD_RO nokey GET i8 0
BITFIELD_RO bf
BITFIELD_RO bf GET u8 0 OVERFLOW SAT
SET t v EX 100
BITFIELD t SET u8 0 255
TTL t
GET t
BITFIELD t GET u8 0 SET u8 0 255
TTL t
BITFIELD t SET u16 100 1
STRLEN t
# the rest of the string family: GETEX GETDEL SETEX PSETEX SETNX MSETNX GETSET
SET g v
GETEX g EX 100
TTL g
GETEX g PERSIST
TTL g
GETEX g PX 100000 PERSIST
GETEX nokey EX 10
GETDEL g
GETDEL g
SETEX se 100 v
SETEX se 0 v
PSETEX pe 100000 v
SETNX se x
SETNX nx v
MSETNX m1 a m2 b
MSETNX m1 a m3 b
MSETNX m1
GETSET m1 z
GETSET nokey z
HSET h f v
GETSET h z
GETEX h
GETDEL h
"""


def corpus_blocks() -> list[list[str]]:
    return split_corpus(CORPUS)


# ---- random operands and commands --------------------------------------------------------------

def float_operand(rng: random.Random) -> str:
    """A number as a client may send it, or a spelling Redis refuses."""
    kind = rng.randrange(10)
    sign = rng.choice(["", "", "-", "+"])
    if kind == 0:
        return sign + str(rng.randint(0, 10 ** rng.randint(1, 19)))
    if kind in (1, 2):  # up to 17 significant digits, the point anywhere
        d = rng.randint(1, 17)
        digits = str(rng.randint(10 ** (d - 1), 10**d - 1))
        p = rng.randint(0, d)
        return sign + digits[:p] + "." + digits[p:]
    if kind == 3:
        d = rng.randint(1, 17)
        digits = str(rng.randint(10 ** (d - 1), 10**d - 1))
        return f"{sign}{digits[0]}.{digits[1:]}{rng.choice('eE')}{rng.randint(-40, 40)}"
    if kind == 4:
        return sign + f"{rng.random() * 10 ** rng.randint(-5, 20):.{rng.randint(0, 17)}g}"
    if kind == 5:  # the long double's range: overflow, subnormals, underflow to zero
        exp = rng.choice([4931, 4932, 4933, -4931, -4940, -4950, -4951, -4952, 308, 309, -324, 19, 20])
        return f"{sign}{rng.randint(1, 9)}e{exp}"
    if kind == 6:
        return f"{sign}0x{rng.getrandbits(rng.randint(1, 70)):x}p{rng.randint(-70, 70)}"
    if kind == 7:
        return rng.choice(["inf", "-inf", "nan", "1e", " 1", "1 ", "", ".", "0x", "abc", "1_0", "infinity", "-0",
                           "0.0", "00.10", "1e+2", "1E-2", "0.1e", "x1", "1.2.3", "9" * 40, "0." + "0" * 30 + "1"])
    if kind == 8:
        return f"{sign}{rng.randint(0, 99)}.{rng.randint(0, 10**17):017d}"
    return sign + str(rng.choice([0.1, 0.2, 0.3, 1.1, 2.5, 3.14159, 1e-9, 123.456, 99.99, 1 / 3]))


KEYS_ = ["k0", "k1", "k2", "k3"]
FIELDS = ["f0", "f1"]
VALUES = ["", "a", "abc", "foobar", "10", "-3.5", "1e3", "0.1", "\x00\xff", "\xff" * 5, "\x0f\xf0",
          "GATTACA", "TAGACA", "hello world"]
INTS = ["0", "1", "2", "3", "-1", "-2", "-3", "5", "7", "8", "9", "15", "16", "100", "-100", "x", "1.5",
        "9223372036854775807", "-9223372036854775808"]


def bitfield_op(rng: random.Random) -> list[str]:
    kind = rng.choice(["GET", "GET", "SET", "INCRBY", "OVERFLOW"])
    if kind == "OVERFLOW":
        return ["OVERFLOW", rng.choice(["WRAP", "SAT", "FAIL", "wrap", "BAD"])]
    bits = rng.choice([1, 2, 3, 7, 8, 9, 15, 16, 31, 32, 33, 62, 63, 64, 65, 0])
    width = f"{rng.choice('iiuuUx')}{bits}"
    offset = rng.choice([str(rng.randint(0, 70)), f"#{rng.randint(0, 5)}", "-1", "x"])
    if kind == "GET":
        return [kind, width, offset]
    value = rng.choice([rng.randint(-300, 300), rng.randint(-2**63, 2**63 - 1), 2**63 - 1, -2**63, 2**(bits - 1),
                        -2**(bits - 1) - 1, 2**bits - 1, 2**bits, -1, 0])
    return [kind, width, offset, str(value)]


def string_command(rng: random.Random) -> list[str]:
    k = rng.choice(KEYS_)
    k2 = rng.choice(KEYS_)
    v = lambda: rng.choice(VALUES)  # noqa: E731
    i = lambda: rng.choice(INTS)  # noqa: E731
    unit = lambda: rng.choice([[], [], ["BIT"], ["BYTE"], ["bit"], ["FOO"]])  # noqa: E731
    choices: list[Any] = [
        lambda: ["SET", k, v()],
        lambda: ["GET", k],
        lambda: ["APPEND", k, v()],
        lambda: ["STRLEN", k],
        lambda: [rng.choice(["GETRANGE", "SUBSTR"]), k, i(), i()],
        lambda: ["SETRANGE", k, rng.choice(["0", "1", "3", "7", "12", "-1", "x", "536870912"]), v()],
        lambda: ["INCRBYFLOAT", k, float_operand(rng)],
        lambda: ["HINCRBYFLOAT", k, rng.choice(FIELDS), float_operand(rng)],
        lambda: ["HSET", k, rng.choice(FIELDS), v()],
        lambda: ["HGETALL", k],
        lambda: ["SETBIT", k, rng.choice(["0", "1", "7", "8", "15", "33", "64", "-1", "x"]),
                 rng.choice(["0", "1", "1", "2"])],
        lambda: ["GETBIT", k, rng.choice(["0", "1", "7", "8", "15", "33", "64", "1000", "-1"])],
        lambda: ["BITCOUNT", k, *rng.choice([[], [i(), i()], [i(), i(), *unit()], [i()]])],
        lambda: ["BITPOS", k, rng.choice(["0", "1", "1", "0", "2"]),
                 *rng.choice([[], [i()], [i(), i()], [i(), i(), *unit()]])],
        lambda: ["BITOP", rng.choice(["AND", "OR", "XOR", "NOT", "and", "NAND"]), k,
                 *[rng.choice(KEYS_) for _ in range(rng.choice([1, 1, 2, 3]))]],
        lambda: ["LCS", k, k2, *rng.sample(["LEN", "IDX", "WITHMATCHLEN", "MINMATCHLEN"], rng.choice([0, 1, 1, 2]))
                 ],
        lambda: ["LCS", k, k2, "IDX", "MINMATCHLEN", rng.choice(["0", "1", "2", "3", "-1"]),
                 *rng.choice([[], ["WITHMATCHLEN"]])],
        lambda: ["DEL", k],
        lambda: ["EXPIRE", k, str(rng.randint(100, 10**6))],
        lambda: ["TTL", k],
        lambda: ["TYPE", k],
        lambda: ["RPUSH", k, v()],
        lambda: ["GETDEL", k],
        lambda: ["GETEX", k, *rng.choice([[], ["PERSIST"], ["EX", str(rng.randint(100, 10**6))]])],
        lambda: ["SETNX", k, v()],
        lambda: ["MSETNX", k, v(), k2, v()],
        lambda: ["INCR", k],
        lambda: [rng.choice(["BITFIELD", "BITFIELD", "BITFIELD_RO"]), k,
                 *[w for _ in range(rng.randint(0, 3)) for w in bitfield_op(rng)]],
    ]
    command: list[str] = rng.choice(choices)()
    if command[0] == "LCS" and "MINMATCHLEN" in command[3:] and command[-1] == "MINMATCHLEN" and rng.random() < 0.7:
        command.append(rng.choice(["1", "2", "x"]))
    return command


def encode(args: list[str]) -> list[bytes]:
    return [a.encode("latin-1") for a in args]  # "\xff" in a value is the byte 0xff


# ---- in-process handlers -------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3])
async def test_corpus(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    async def body(pair: HandlerPair, engine: Engine) -> None:
        await corpus_in_process(pair, engine, corpus_blocks(), flush_every=13, words=bcmd)
    await _run(redis_socket, tmp_path, protocol, body)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_random_sequences(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    def probe_keys(pair: HandlerPair, where: str) -> None:
        for k in KEYS_:
            for probe in (["TYPE", k], ["GET", k], ["HGETALL", k], ["TTL", k]):
                pair.run(encode(probe), where)

    async def body(pair: HandlerPair, engine: Engine) -> None:
        await random_in_process(pair, engine, string_command, seeds=SEEDS, steps=STEPS, flush_chance=0.03,
                                after_seed=probe_keys, encoding="latin-1")
    await _run(redis_socket, tmp_path, protocol, body)


@pytest.mark.parametrize("protocol", [2, 3])
async def test_float_increments(redis_socket: str, tmp_path: Path, protocol: int) -> None:
    """Thousands of random operands: INCRBYFLOAT's and HINCRBYFLOAT's replies and stored text."""
    async def body(pair: HandlerPair, engine: Engine) -> None:
        rng = random.Random(1700 + protocol)
        for n in range(2500):
            start, incr = float_operand(rng), float_operand(rng)
            key, hkey = f"f{n % 50}", f"h{n % 50}"
            pair.run(encode(["DEL", key, hkey]), "reset")
            if rng.random() < 0.8:
                pair.run(encode(["SET", key, start]), "start")
                pair.run(encode(["HSET", hkey, "f", start]), "start")
            pair.run(encode(["INCRBYFLOAT", key, incr]), f"{start!r} + {incr!r}")
            pair.run(encode(["GET", key]), f"{start!r} + {incr!r}")
            pair.run(encode(["HINCRBYFLOAT", hkey, "f", incr]), f"{start!r} + {incr!r}")
            pair.run(encode(["HGET", hkey, "f"]), f"{start!r} + {incr!r}")
            if n % 500 == 499:
                await engine.flush()
        # a running sum: each result is the next operand
        pair.run(encode(["DEL", "acc"]), "acc")
        for n in range(500):
            pair.run(encode(["INCRBYFLOAT", "acc", float_operand(rng)]), f"running sum {n}")
        # the longest operand Redis reads (5119 bytes) and the first it refuses
        for size in (5119, 5120):
            digits = "1." + "0" * (size - 3) + "1"
            pair.run(encode(["INCRBYFLOAT", "long", digits]), f"{size} bytes")
            pair.run(encode(["HINCRBYFLOAT", "hlong", "f", digits]), f"{size} bytes")
            pair.run(encode(["SET", "long", digits]), f"{size} bytes")
            pair.run(encode(["INCRBYFLOAT", "long", "0"]), f"{size} bytes stored")
    await _run(redis_socket, tmp_path, protocol, body)


async def test_large_values(redis_socket: str, tmp_path: Path) -> None:
    """Kilobyte-sized strings: BITCOUNT/BITPOS at every unit, BITOP, SETRANGE past the end, LCS."""
    rng = random.Random(99)

    async def body(pair: HandlerPair, engine: Engine) -> None:
        for n in range(4):
            pair.run([b"SET", b"x%d" % n, rng.randbytes(rng.randint(500, 3000))], "fill")
        pair.run([b"SET", b"zeros", bytes(2000) + b"\x01"], "fill")
        pair.run([b"SET", b"ones", b"\xff" * 2000 + b"\xfe"], "fill")
        await engine.flush()
        keys = [b"x0", b"x1", b"x2", b"x3", b"zeros", b"ones"]
        for _ in range(300):
            k = rng.choice(keys)
            a, b = (str(rng.randint(-30000, 30000)).encode() for _ in range(2))
            unit = rng.choice([b"BIT", b"BYTE"])
            pair.run([b"BITCOUNT", k, a, b, unit], "bitcount")
            pair.run([b"BITPOS", k, rng.choice([b"0", b"1"]), a, b, unit], "bitpos")
            pair.run([b"BITPOS", k, rng.choice([b"0", b"1"]), a], "bitpos")
        for op in (b"AND", b"OR", b"XOR"):
            pair.run([b"BITOP", op, b"dest", *keys], op.decode())
            pair.run([b"GET", b"dest"], op.decode())
        pair.run([b"SETRANGE", b"x0", b"5000", b"tail"], "setrange")
        pair.run([b"GET", b"x0"], "setrange")
        pair.run([b"SETBIT", b"x1", b"40000", b"1"], "setbit")
        pair.run([b"GET", b"x1"], "setbit")
        for n in range(3):
            pair.run([b"SET", b"l%d" % n, bytes(rng.choice(b"ACGT") for _ in range(rng.randint(300, 800)))], "fill")
        for opts in ([], [b"LEN"], [b"IDX"], [b"IDX", b"MINMATCHLEN", b"3", b"WITHMATCHLEN"]):
            pair.run([b"LCS", b"l0", b"l1", *opts], "lcs")
            pair.run([b"LCS", b"l2", b"l0", *opts], "lcs")
    await _run(redis_socket, tmp_path, 2, body)


# ---- a real daemon: transactions, pipelines -------------------------------------------------------

def test_server_corpus_pipelined(pair: ServerPair) -> None:
    """The corpus through a daemon, each block as one pipelined write."""
    corpus_over_daemon(pair, corpus_blocks(), pipelined=True, words=bcmd)


def test_server_transactions(pair: ServerPair) -> None:
    """Random string commands inside MULTI/EXEC (some with an arity error that aborts EXEC)."""
    def step(rng: random.Random, where: str) -> None:
        if rng.random() < 0.5:
            pair.run(encode(string_command(rng)), where)
            return
        batch = [[b"MULTI"]] + [encode(string_command(rng)) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.1:
            batch.append([b"SETRANGE", b"k0"])  # queued with the wrong arity: EXECABORT
        batch.append([b"EXEC"] if rng.random() < 0.9 else [b"DISCARD"])
        if rng.random() < 0.5:
            pair.pipeline(batch, where + " tx")
        else:
            for args in batch:
                pair.run(args, where + " tx")
        if rng.random() < 0.05:  # (only after a transaction: the draw is part of the seeded sequence)
            pair.memd_flush()
    random_over_daemon(pair, step, seeds=6, steps=60, seed_base=500, flush_chance=0)


# ---- durability -------------------------------------------------------------------------------------

WRITES = r"""
SET s "Hello World"
SETRANGE s 6 Redis
SETRANGE pad 5 x
APPEND s "!"
APPEND fresh ""
SETBIT bits 3 1
SETBIT bits 100 1
SETBIT bits 3 0
SET t v EX 1000
SETRANGE t 4 w
SETBIT t 60 1
INCRBYFLOAT t2 0.1
INCRBYFLOAT f 10.5
INCRBYFLOAT f 0.1
INCRBYFLOAT f 1e-17
HINCRBYFLOAT h a 3.0e3
HINCRBYFLOAT h b -0.000003814697265625
EXPIRE h 1000
HINCRBYFLOAT h a 1.5
MSET x foobar y abcdef
BITOP AND and x y
BITOP OR or x y
BITOP XOR xor x y pad
BITOP NOT not x
SET gone v
BITOP AND gone nokey
SETEX se 1000 v
PSETEX pe 1000000 v
SETNX nx v
MSETNX m1 a m2 b
GETSET m1 z
SET gd v
GETDEL gd
SET ge v
GETEX ge EX 1000
BITFIELD bf SET i16 #2 -1234 INCRBY u4 3 7 OVERFLOW FAIL INCRBY u2 0 9
BITFIELD t OVERFLOW SAT INCRBY i8 0 100
BITFIELD failed OVERFLOW FAIL INCRBY u2 20 9
"""
PROBES = ["s", "pad", "fresh", "bits", "t", "t2", "f", "h", "x", "and", "or", "xor", "not", "gone", "se", "pe",
          "nx", "m1", "m2", "gd", "ge", "bf", "failed"]


def test_writes_survive_a_crash(redis_socket: str) -> None:
    """The family's writes, half flushed to SQLite, half only in the WAL; SIGKILL; replay; same state."""
    daemon = Daemon(fsync="always").start()
    try:
        pair = ServerPair(redis_socket, daemon.socket, 2)
        pair.run(bcmd("FLUSHALL"), "setup")
        lines = [line for line in WRITES.strip().splitlines() if line.strip()]
        for j, line in enumerate(lines):
            pair.run(bcmd(line), "writes")
            if j == len(lines) // 2:
                pair.memd_flush()
        pair.close()
        daemon.kill()  # SIGKILL: no final flush, the WAL's tail must be replayed
        daemon.start()
        pair = ServerPair(redis_socket, daemon.socket, 2)
        for key in PROBES:
            for probe in ("TYPE", "GET", "HGETALL", "TTL", "STRLEN"):
                pair.run(bcmd(f"{probe} {key}"), "after restart")
        pair.close()
        pair.assert_clean()
    finally:
        daemon.cleanup()
