"""The string family's pure parts and its limits, without a redis-server.

- :mod:`memd.longdouble`: ``parse`` against exact rational rounding to the
  platform's long double (what a correctly rounding ``strtold`` gives, with
  Redis's refusals), ``format_human`` against an exact decimal expansion;
- LCS's bit-parallel table against the textbook dynamic programme;
- the size limit follows memd's ``server.max_bulk_bytes`` (Redis's
  proto-max-bulk-len) in SETRANGE, APPEND, SETBIT and LCS;
- the new writes replay from the WAL after a crash-like close.

Byte-for-byte agreement with Redis is tests/integration/test_differential_strings.py's job.
"""

from __future__ import annotations

import decimal
import math
import re
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memd.commands.bitfield  # noqa: F401  (each module registers its commands)
import memd.commands.bits  # noqa: F401
import memd.commands.hashes  # noqa: F401
import memd.commands.keys  # noqa: F401
import memd.commands.lcs  # noqa: F401
import memd.commands.strings  # noqa: F401
from memd import longdouble
from memd.commands import COMMANDS, Context, check_arity
from memd.commands.lcs import Table
from memd.engine.engine import Engine
from memd.errors import CommandError

pytestmark = pytest.mark.anyio

FINFO = np.finfo(np.longdouble)
BITS = int(FINFO.nmant) + 1
MIN_EXP = int(FINFO.minexp)  # the smallest normal number is 2**MIN_EXP
MAX = Fraction(int(np.ldexp(np.longdouble(1) - FINFO.epsneg, BITS))) * Fraction(2) ** (int(FINFO.maxexp) - BITS)


# ---- a reference: exact rational -> long double, round half to even ---------------------------

def nearest(q: Fraction) -> Fraction | None:
    """``q`` rounded to the nearest long double (subnormals included); None on overflow."""
    if q == 0:
        return Fraction(0)
    sign = -1 if q < 0 else 1
    q = abs(q)
    e = q.numerator.bit_length() - q.denominator.bit_length()  # 2**e <= q < 2**(e+2)
    while Fraction(2) ** e > q:
        e -= 1
    while Fraction(2) ** (e + 1) <= q:
        e += 1
    step_exp = max(e, MIN_EXP) - (BITS - 1)  # the spacing of long doubles around q
    scaled = q / Fraction(2) ** step_exp
    whole = scaled.numerator // scaled.denominator
    rest = scaled - whole
    if rest > Fraction(1, 2) or rest == Fraction(1, 2) and whole % 2:
        whole += 1
    value = Fraction(whole) * Fraction(2) ** step_exp
    if value > MAX:
        return None
    return sign * value


def exact(value: np.longdouble) -> Fraction:
    fraction, exponent = np.frexp(value)
    return Fraction(int(np.ldexp(fraction, BITS))) * Fraction(2) ** (int(exponent) - BITS)


_DECIMAL = re.compile(r"([+-]?)(\d*)\.?(\d*)(?:[eE]([+-]?\d+))?\Z")


def decimal_value(text: str) -> Fraction:
    sign, whole, frac, exp = _DECIMAL.match(text).groups()  # type: ignore[union-attr]
    digits = int((whole or "0") + frac)
    value = Fraction(digits) * Fraction(10) ** (int(exp or 0) - len(frac))
    return -value if sign == "-" else value


decimals = st.builds(
    lambda sign, digits, point, exp: f"{sign}{digits[:point]}.{digits[point:]}e{exp}",
    st.sampled_from(["", "-", "+"]),
    st.integers(1, 10**25).map(str),
    st.integers(0, 25),
    st.one_of(st.integers(-30, 30), st.integers(-4960, -4920), st.integers(4900, 4940)),
)


@settings(max_examples=400, deadline=None)
@given(decimals)
def test_parse_rounds_as_exact_arithmetic_does(text: str) -> None:
    expected = nearest(decimal_value(text))
    got = longdouble.parse(text.encode())
    if expected is None or expected == 0 and decimal_value(text) != 0:
        assert got is None  # ERANGE: an overflow or an underflow to zero, which Redis refuses
    else:
        assert got is not None and exact(got) == expected


def test_parse_refuses_what_string2ld_refuses() -> None:
    for text in [b"", b" 1", b"1 ", b"\t1", b"1\x00", b"nan", b"-nan", b"nan(1)", b"1e", b"e1", b".", b"0x",
                 b"0x1p", b"1_0", b"--1", b"1.2.3", b"\xd9\xa1", b"1e5000", b"-1e5000", b"1e-5000",
                 b"1" * longdouble.MAX_CHARS]:
        assert longdouble.parse(text) is None, text
    for text, value in [(b"+1", 1), (b".5", 0.5), (b"5.", 5), (b"0x10", 16), (b"0X1P-2", 0.25), (b"-0", 0),
                        (b"0e-99999999999999999999", 0), (b"1." + b"0" * (longdouble.MAX_CHARS - 4) + b"1", 1)]:
        got = longdouble.parse(text)
        assert got is not None, text
        assert value is None or got == value
    for text in (b"inf", b"-INF", b"+Infinity"):
        got = longdouble.parse(text)
        assert got is not None and math.isinf(float(got))


def reference_format(value: np.longdouble) -> bytes:
    """%.17Lf from the exact value, trailing zeros and '.' dropped, "-0" as "0"."""
    q = exact(value)
    scaled = abs(q) * 10**17
    whole = scaled.numerator // scaled.denominator
    rest = scaled - whole
    if rest > Fraction(1, 2) or rest == Fraction(1, 2) and whole % 2:
        whole += 1
    text = f"{whole // 10**17}.{whole % 10**17:017d}".rstrip("0").rstrip(".")
    if q < 0 and text != "0":
        text = "-" + text
    return text.encode()


@settings(max_examples=300, deadline=None)
@given(decimals)
def test_format_human_is_the_exact_decimal(text: str) -> None:
    value = longdouble.parse(text.encode())
    if value is not None and not math.isinf(float(value)) and abs(exact(value)) < 10**300:
        assert longdouble.format_human(value) == reference_format(value)


def test_format_human_cases() -> None:
    ld = np.longdouble
    assert longdouble.format_human(ld(0)) == b"0"
    assert longdouble.format_human(-ld(0)) == b"0"
    assert longdouble.format_human(ld(-1) / ld(10**20)) == b"0"  # rounds to -0.000...: written "0"
    assert longdouble.format_human(np.ldexp(ld(1), -18)) == b"0.00000381469726562"  # a tie: to even
    assert longdouble.format_human(np.ldexp(ld(3), -18)) == b"0.00001144409179688"  # a tie: to even
    assert longdouble.format_human(ld(100)) == b"100"
    big = longdouble.format_human(np.ldexp(ld(1), 16383))  # 4932 digits: past Python's int->str limit
    with decimal.localcontext() as context:
        context.prec = 5000
        assert big == str(decimal.Decimal(2) ** 16383).encode()


def test_add() -> None:
    assert longdouble.add(b"0.1", b"0.2", "x") == b"0.3"  # doubles would say 0.30000000000000004
    assert longdouble.add(None, b"10.5", "x") == b"10.5"
    with pytest.raises(CommandError, match="^custom$"):
        longdouble.add(b"abc", b"1", "custom")
    with pytest.raises(CommandError, match="^value is not a valid float$"):
        longdouble.add(b"1", b"abc", "custom")
    for current, incr in [(b"inf", b"1"), (b"1", b"-inf"), (b"-inf", b"inf"), (b"1.1e4932", b"1e4932")]:
        with pytest.raises(CommandError, match="^increment would produce NaN or Infinity$"):
            longdouble.add(current, incr, "x")


# ---- LCS -------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=14).map(lambda x: bytes(c % 4 for c in x)),
       st.binary(max_size=14).map(lambda x: bytes(c % 4 for c in x)))
def test_lcs_table_is_the_dynamic_programme(a: bytes, b: bytes) -> None:
    table = Table(a, b, keep_rows=True)
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    assert table.length == dp[-1][-1] == Table(a, b, keep_rows=False).length
    assert all(table.at(i, j) == dp[i][j] for i in range(len(a) + 1) for j in range(len(b) + 1))


# ---- the size limit and durability ------------------------------------------------------------------

def call(ctx: Context, *argv: str | bytes) -> Any:
    args = [a if isinstance(a, bytes) else a.encode() for a in argv]
    cmd = COMMANDS[args[0].lower()]
    check_arity(cmd, len(args) - 1)
    return cmd.handler(ctx, args[1:])


async def test_the_size_limit_is_the_servers_max_bulk_bytes(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "data")) as engine:
        server: Any = SimpleNamespace(limits=SimpleNamespace(max_bulk_bytes=100))
        ctx = Context(engine=engine, server=server)
        too_big = "string exceeds maximum allowed size (proto-max-bulk-len)"
        assert call(ctx, "SETRANGE", "k", "90", "0123456789") == 100
        with pytest.raises(CommandError, match=re.escape(too_big)):
            call(ctx, "SETRANGE", "k", "91", "0123456789")
        with pytest.raises(CommandError, match=re.escape(too_big)):
            call(ctx, "APPEND", "k", "x")
        assert call(ctx, "SETBIT", "bits", "799", "1") == 0
        with pytest.raises(CommandError, match="bit offset is not an integer or out of range"):
            call(ctx, "SETBIT", "bits", "800", "1")
        assert call(ctx, "BITFIELD", "bits", "GET", "u8", "#99") == [1]
        with pytest.raises(CommandError, match="bit offset is not an integer or out of range"):
            call(ctx, "BITFIELD", "bits", "GET", "u8", "#100")
        call(ctx, "SET", "a", "0123")
        assert call(ctx, "LCS", "a", "a", "LEN") == 4  # 5 * 5 cells of 4 bytes: 100
        call(ctx, "SET", "a", "01234")
        with pytest.raises(CommandError, match="transient memory for LCS exceeds proto-max-bulk-len"):
            call(ctx, "LCS", "a", "a", "LEN")
        assert call(Context(engine=engine), "SETRANGE", "k", "200", "x") == 201  # no server: Redis's 512 MB


async def test_writes_replay_after_a_crash(tmp_path: Path, fake_clock: Any) -> None:
    path = str(tmp_path / "data")
    writes = [("SET", "s", "Hello World"), ("SETRANGE", "s", "6", "Redis"), ("SETRANGE", "pad", "3", "x"),
              ("APPEND", "s", "!"), ("SETBIT", "bits", "9", "1"), ("SET", "t", "1", "EX", "100"),
              ("INCRBYFLOAT", "t", "0.1"), ("SETBIT", "t", "20", "1"), ("HINCRBYFLOAT", "h", "f", "2.5e-3"),
              ("HINCRBYFLOAT", "h", "f", "1"), ("MSET", "x", "foo", "y", "bar"), ("BITOP", "XOR", "xor", "x", "y"),
              ("SET", "gone", "v"), ("BITOP", "AND", "gone", "nokey")]
    probes = [("GET", k) for k in ("s", "pad", "bits", "t", "xor", "gone")] + [("HGETALL", "h"), ("PTTL", "t")]
    async with Engine(path, clock=fake_clock, flush_max_age=3600.0) as engine:
        ctx = Context(engine=engine)
        for n, w in enumerate(writes):
            call(ctx, *w)
            if n == 5:
                await engine.flush()  # the first writes from SQLite, the rest from the WAL
        before = [call(ctx, *p) for p in probes]

        async def no_final_flush() -> None:
            pass
        engine._flush_all = no_final_flush  # type: ignore[method-assign]
    assert before[0] == b"Hello Redis!" and before[3] == b"1.9" and before[-1] == 100_000
    async with Engine(path, clock=fake_clock, flush_max_age=3600.0) as engine:
        assert engine.recovery_report.records > 0
        assert [call(Context(engine=engine), *p) for p in probes] == before


def test_registered_with_redis_arity_and_write_flag() -> None:
    expected = {"getrange": (4, False), "substr": (4, False), "setrange": (4, True), "append": (3, True),
                "incrbyfloat": (3, True), "hincrbyfloat": (4, True), "setbit": (4, True), "getbit": (3, False),
                "bitcount": (-2, False), "bitpos": (-3, False), "bitop": (-4, True), "lcs": (-3, False),
                "bitfield": (-2, True), "bitfield_ro": (-2, False)}
    for name, (arity, write) in expected.items():
        cmd = COMMANDS[name.encode()]
        assert (cmd.arity, cmd.write) == (arity, write), name
