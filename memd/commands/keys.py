"""Key commands: DEL UNLINK EXISTS TYPE EXPIRE PEXPIRE EXPIREAT PEXPIREAT TTL PTTL EXPIRETIME
PEXPIRETIME PERSIST KEYS SCAN DBSIZE FLUSHDB FLUSHALL.

Redis 7.0 semantics (``db.c``, ``expire.c``). Patterns (KEYS, SCAN MATCH)
follow Redis's ``stringmatchlen`` byte for byte, translated once into a
compiled regular expression (see :func:`glob_regex`).

SCAN cursors: the keyspace scans in key order and resumes *after* a key, so
a cursor is that key as a decimal integer, ``int.from_bytes(b"\\x01" + key)``
(the 0x01 byte keeps leading NULs); "0" starts and ends a scan. Clients
(redis-py, redis-cli) parse cursors as integers, which Python caps at 4300
digits, so a resume key longer than :data:`CURSOR_KEY_MAX` bytes is cut to
that prefix: resuming after a prefix can only return keys again, never skip
one, which is within SCAN's contract.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from memd.commands import Context, command
from memd.commands.strings import OK, SYNTAX, expire_error, ll
from memd.engine.keyspace import M_EXPIRES_AT
from memd.errors import CommandError
from memd.int64 import INT64_MAX, INT64_MIN
from memd.resp import SimpleString

CURSOR_KEY_MAX = 1024
_KEYS_BATCH = 4096


# ---- Redis glob patterns -----------------------------------------------------------------

def _signed(byte: int) -> int:
    """A byte as C's (signed) ``char`` sees it: Redis's ranges compare signed values."""
    return byte - 256 if byte >= 128 else byte


def _class_regex(members: set[int]) -> bytes:
    if not members:
        return b"(?!)"
    if len(members) == 256:
        return b"."
    parts: list[bytes] = []
    run_start = prev = -2
    for b in sorted(members) + [-2]:
        if b != prev + 1:
            if run_start >= 0:
                parts.append(b"\\x%02x" % run_start if run_start == prev else b"\\x%02x-\\x%02x" % (run_start, prev))
            run_start = b
        prev = b
    return b"[" + b"".join(parts) + b"]"


def _tokens(pattern: bytes) -> list[bytes | None]:
    """Regex pieces for each pattern position; None stands for a run of '*'.

    Mirrors ``stringmatchlen_impl`` (util.c): ``\\x`` is a literal x (a
    trailing lone backslash is literal); ``[...]`` takes ``^`` for negation,
    ``\\x`` escapes, ``a-z`` ranges (ends in either order, compared as signed
    chars, and a range may swallow the closing ``]``); an unterminated class
    runs to the end of the pattern.
    """
    out: list[bytes | None] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 42:  # '*'
            while i < n and pattern[i] == 42:
                i += 1
            out.append(None)
            continue
        if c == 63:  # '?'
            out.append(b".")
        elif c == 91:  # '['
            i += 1
            negate = i < n and pattern[i] == 94  # '^'
            if negate:
                i += 1
            members: set[int] = set()
            while True:
                if i < n and pattern[i] == 92 and n - i >= 2:  # '\' escapes the next byte
                    i += 1
                    members.add(pattern[i])
                elif i < n and pattern[i] == 93:  # ']'
                    break
                elif i >= n:  # unterminated: the class ends with the pattern
                    i = n - 1
                    break
                elif n - i >= 3 and pattern[i + 1] == 45:  # 'a-z'
                    lo, hi = _signed(pattern[i]), _signed(pattern[i + 2])
                    if lo > hi:
                        lo, hi = hi, lo
                    members.update(b for b in range(256) if lo <= _signed(b) <= hi)
                    i += 2
                else:
                    members.add(pattern[i])
                i += 1
            if negate:
                members = set(range(256)) - members
            out.append(_class_regex(members))
        elif c == 92 and n - i >= 2:  # '\x'
            i += 1
            out.append(re.escape(pattern[i:i + 1]))
        else:
            out.append(re.escape(pattern[i:i + 1]))
        i += 1
    return out


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: bytes) -> re.Pattern[bytes]:
    """Compile a Redis glob; for use with ``fullmatch`` on non-empty subjects.

    Segments between stars have a fixed length, so matching each middle
    segment at its leftmost position is optimal: atomic lazy groups commit
    to it, and the cost stays O(len(pattern) * len(key)) however many stars
    the pattern has (a naive ``.*`` translation is exponential).
    """
    segments: list[list[bytes]] = [[]]
    for tok in _tokens(pattern):
        if tok is None:
            segments.append([])
        else:
            segments[-1].append(tok)
    parts = [b"".join(seg) for seg in segments]
    if len(parts) == 1:
        return re.compile(parts[0], re.DOTALL)
    middle = b"".join(b"(?>.*?" + p + b")" for p in parts[1:-1])
    return re.compile(parts[0] + middle + b".*" + parts[-1], re.DOTALL)


def glob_match(pattern: bytes, subject: bytes) -> bool:
    """Redis ``stringmatchlen(pattern, subject, nocase=0)``."""
    if not subject:  # Redis never enters its loop for an empty subject: only "" matches it
        return not pattern
    return glob_regex(pattern).fullmatch(subject) is not None


# ---- DEL, EXISTS, TYPE ----------------------------------------------------------------------

@command("del", -2, write=True)
def del_(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.delete(args)


@command("unlink", -2, write=True)
def unlink(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.delete(args)


@command("exists", -2)
def exists(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.exists(args)


@command("type", 2)
def type_(ctx: Context, args: list[bytes]) -> object:
    return SimpleString(ctx.keyspace.type_name(args[0]))


# ---- expiry ---------------------------------------------------------------------------------

def _expire(ctx: Context, args: list[bytes], name: str, *, relative: bool, seconds: bool) -> int:
    flags: set[bytes] = set()
    for raw in args[2:]:
        opt = raw.lower()
        if opt not in (b"nx", b"xx", b"gt", b"lt"):
            raise CommandError(f"Unsupported option {raw.decode('utf-8', 'surrogateescape')}")
        flags.add(opt)
    if b"nx" in flags and len(flags) > 1:
        raise CommandError("NX and XX, GT or LT options at the same time are not compatible")
    if b"gt" in flags and b"lt" in flags:
        raise CommandError("GT and LT options at the same time are not compatible")
    when = ll(args[1])
    if seconds:
        if when > INT64_MAX // 1000 or when < -(-INT64_MIN // 1000):  # C division truncates
            raise expire_error(name)
        when *= 1000
    ks = ctx.keyspace
    base = ks.now_ms() if relative else 0
    if when > INT64_MAX - base:
        raise expire_error(name)
    done = ks.expire_at(args[0], when + base, nx=b"nx" in flags, xx=b"xx" in flags, gt=b"gt" in flags,
                        lt=b"lt" in flags)
    return 1 if done else 0


@command("expire", -3, write=True)
def expire(ctx: Context, args: list[bytes]) -> object:
    return _expire(ctx, args, "expire", relative=True, seconds=True)


@command("pexpire", -3, write=True)
def pexpire(ctx: Context, args: list[bytes]) -> object:
    return _expire(ctx, args, "pexpire", relative=True, seconds=False)


@command("expireat", -3, write=True)
def expireat(ctx: Context, args: list[bytes]) -> object:
    return _expire(ctx, args, "expireat", relative=False, seconds=True)


@command("pexpireat", -3, write=True)
def pexpireat(ctx: Context, args: list[bytes]) -> object:
    return _expire(ctx, args, "pexpireat", relative=False, seconds=False)


@command("ttl", 2)
def ttl(ctx: Context, args: list[bytes]) -> object:
    ms = ctx.keyspace.pttl(args[0])
    return ms if ms < 0 else (ms + 500) // 1000


@command("pttl", 2)
def pttl(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.pttl(args[0])


def _expiretime(ctx: Context, key: bytes) -> int:
    m = ctx.keyspace.peek(key)
    if m is None:
        return -2
    return -1 if m[M_EXPIRES_AT] is None else max(0, m[M_EXPIRES_AT])


@command("expiretime", 2)
def expiretime(ctx: Context, args: list[bytes]) -> object:
    t = _expiretime(ctx, args[0])
    return t if t < 0 else (t + 500) // 1000


@command("pexpiretime", 2)
def pexpiretime(ctx: Context, args: list[bytes]) -> object:
    return _expiretime(ctx, args[0])


@command("persist", 2, write=True)
def persist(ctx: Context, args: list[bytes]) -> object:
    return 1 if ctx.keyspace.expire_at(args[0], None) else 0


# ---- KEYS, SCAN, DBSIZE, FLUSH -------------------------------------------------------------

def encode_cursor(key: bytes | None) -> bytes:
    if key is None:
        return b"0"
    return str(int.from_bytes(b"\x01" + key[:CURSOR_KEY_MAX], "big")).encode()


_CURSOR = re.compile(rb"[+-]?[0-9]*")


_END = object()  # a well-formed number that is not one of our cursors


def decode_cursor(raw: bytes) -> Any:
    """A cursor from :func:`encode_cursor` -> the key to resume after (None: from the start).

    What Redis's ``strtoul`` rejects is "invalid cursor"; what it reads as 0
    ("0", "", "-0", "+00"...) starts a scan. Any other number that this
    module did not produce (e.g. "-1", which Redis wraps to its last
    bucket) gives :data:`_END`: the reply ends the scan.
    """
    raw = raw.split(b"\0", 1)[0]  # a C string ends at NUL
    if not _CURSOR.fullmatch(raw) or raw in (b"+", b"-"):
        raise CommandError("invalid cursor")
    digits = raw.lstrip(b"+-").lstrip(b"0")
    if not digits:
        return None
    if raw.startswith(b"-") or len(digits) > 4000:
        return _END
    value = int(digits)
    data = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if data[:1] != b"\x01":
        return _END
    return data[1:]


def _scan_page(ctx: Context, after: bytes | None, count: int) -> tuple[list[bytes], bytes | None]:
    """One keyspace page whose resume point, once cut to CURSOR_KEY_MAX, is past ``after``."""
    ks = ctx.keyspace
    keys, resume = ks.scan(after, count)
    # a cut resume point equal to the cursor we were given would loop forever: read on
    while resume is not None and len(resume) > CURSOR_KEY_MAX and after is not None \
            and resume[:CURSOR_KEY_MAX] <= after:
        more, resume = ks.scan(resume, count)
        keys += more
    return keys, resume


SCAN_DEFAULT_COUNT = 10


def scan_options(args: list[bytes], *, types: bool = False) -> tuple[int, bytes | None, bytes | None]:
    """``(COUNT, MATCH pattern or None for '*', TYPE or None)`` from the SCAN family's options.

    ``types``: TYPE is an option (SCAN only; HSCAN, SSCAN and ZSCAN take COUNT and MATCH).
    """
    count = SCAN_DEFAULT_COUNT
    pattern: bytes | None = None
    type_name: bytes | None = None
    i, n = 0, len(args)
    while i < n:
        opt = args[i].lower()
        if opt == b"count" and n - i >= 2:
            count = ll(args[i + 1])
            if count < 1:
                raise CommandError(SYNTAX)
        elif opt == b"match" and n - i >= 2:
            pattern = None if args[i + 1] == b"*" else args[i + 1]
        elif types and opt == b"type" and n - i >= 2:
            type_name = args[i + 1].lower()
        else:
            raise CommandError(SYNTAX)
        i += 2
    return count, pattern, type_name


@command("scan", -2)
def scan(ctx: Context, args: list[bytes]) -> object:
    after = decode_cursor(args[0])
    count, pattern, type_name = scan_options(args[1:], types=True)
    if after is _END:
        return [b"0", []]
    keys, resume = _scan_page(ctx, after, count)
    if pattern is not None:
        keys = [k for k in keys if glob_match(pattern, k)]
    if type_name is not None:
        ks = ctx.keyspace
        keys = [k for k in keys if ks.type_name(k).encode() == type_name]
    return [encode_cursor(resume), keys]


@command("keys", 2)
def keys(ctx: Context, args: list[bytes]) -> object:
    pattern = args[0]
    ks = ctx.keyspace
    out: list[bytes] = []
    after: bytes | None = None
    while True:
        page, after = ks.scan(after, _KEYS_BATCH)
        out += page if pattern == b"*" else [k for k in page if glob_match(pattern, k)]
        if after is None:
            return out


@command("dbsize", 1)
def dbsize(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.dbsize()


def _flush_mode(args: list[bytes]) -> None:
    """FLUSHDB / FLUSHALL [ASYNC|SYNC]: both run the same way here (one WAL op; the store wipes at the next flush)."""
    if len(args) > 1 or args and args[0].lower() not in (b"sync", b"async"):
        raise CommandError(SYNTAX)


@command("flushdb", -1, write=True)
def flushdb(ctx: Context, args: list[bytes]) -> object:
    _flush_mode(args)
    ctx.keyspace.flushdb()
    return OK


@command("flushall", -1, write=True)
def flushall(ctx: Context, args: list[bytes]) -> object:
    _flush_mode(args)
    ctx.keyspace.flushall()
    return OK
