"""Whole-key commands: RENAME RENAMENX COPY MOVE SWAPDB RANDOMKEY TOUCH OBJECT.

Redis 7.0 semantics (``db.c``, ``object.c``). OBJECT's subcommands check their own arity, with
Redis's ``object|sub`` wording (inside MULTI that error comes at EXEC, where
Redis refuses the command while queuing). What the engine side does (an
O(n) element copy for RENAME/COPY of a collection, the bounded access-time
map behind IDLETIME) is explained in :mod:`memd.engine.keyops`.
"""

from __future__ import annotations

import random

from memd.commands import Context, command, parse_int, wrong_arity
from memd.commands.strings import OK, SYNTAX
from memd.errors import CommandError
from memd.resp import SimpleString

_RNG = random.Random()

NO_SUCH_KEY = "no such key"
SAME_OBJECT = "source and destination objects are the same"
DB_RANGE = "DB index is out of range"
NOT_INT = "value is not an integer or out of range"
INT_RANGE = "value is out of range, value must between -2147483648 and 2147483647"
NO_LFU = ("An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching "
          "between policies at runtime LRU and LFU data will take some time to adjust.")

_OBJECT_HELP = (
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
)


def c_text(raw: bytes, limit: int = 128) -> str:
    """An argument as Redis's ``%.128s`` prints it: up to the first NUL, at most ``limit`` bytes."""
    return raw.split(b"\0", 1)[0][:limit].decode("utf-8", "surrogateescape")


# ---- RENAME, COPY --------------------------------------------------------------------------

@command("rename", 3, write=True)
def rename(ctx: Context, args: list[bytes]) -> object:
    if ctx.keyspace.rename(args[0], args[1]) is None:
        raise CommandError(NO_SUCH_KEY)
    return OK


@command("renamenx", 3, write=True)
def renamenx(ctx: Context, args: list[bytes]) -> object:
    done = ctx.keyspace.rename(args[0], args[1], nx=True)
    if done is None:
        raise CommandError(NO_SUCH_KEY)
    return 1 if done else 0


@command("copy", -3, write=True)
def copy(ctx: Context, args: list[bytes]) -> object:
    replace = False
    db = ctx.db
    i, n = 2, len(args)
    while i < n:
        opt = args[i].lower()
        if opt == b"replace":
            replace = True
        elif opt == b"db" and n - i >= 2:
            db = _db_index(ctx, args[i + 1])
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    if args[0] == args[1] and db == ctx.db:
        raise CommandError(SAME_OBJECT)
    target = ctx.engine.keyspace_of(db)
    return 1 if ctx.keyspace.copy(args[0], args[1], replace=replace, target=target) else 0


def _c_int(raw: bytes, what: str) -> int:
    """getIntFromObjectOrReply: a C int; ``what`` is the error either way (Redis's own text when it is NOT_INT)."""
    value = parse_int(raw, what)
    if not -(1 << 31) <= value < (1 << 31):
        raise CommandError(INT_RANGE if what == NOT_INT else what)
    return value


def _db_index(ctx: Context, raw: bytes) -> int:
    """A database index argument: a C int, then one of the databases."""
    db = _c_int(raw, NOT_INT)
    if not 0 <= db < ctx.engine.databases:
        raise CommandError(DB_RANGE)
    return db


@command("move", 3, write=True)
def move(ctx: Context, args: list[bytes]) -> object:
    db = _db_index(ctx, args[1])
    if db == ctx.db:
        raise CommandError(SAME_OBJECT)
    return 1 if ctx.keyspace.move(args[0], ctx.engine.keyspace_of(db)) else 0


@command("swapdb", 3, write=True)
def swapdb(ctx: Context, args: list[bytes]) -> object:
    first, second = _c_int(args[0], "invalid first DB index"), _c_int(args[1], "invalid second DB index")
    databases = ctx.engine.databases
    if not (0 <= first < databases and 0 <= second < databases):
        raise CommandError(DB_RANGE)
    ctx.engine.swapdb(first, second)
    return OK


# ---- RANDOMKEY, TOUCH ----------------------------------------------------------------------

@command("randomkey", 1)
def randomkey(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.random_key(_RNG)


@command("touch", -2)
def touch(ctx: Context, args: list[bytes]) -> object:
    return ctx.keyspace.touch(args)


# ---- OBJECT --------------------------------------------------------------------------------

@command("object", -2)
def object_(ctx: Context, args: list[bytes]) -> object:
    sub = args[0].lower()
    if sub == b"help":
        if len(args) != 1:
            raise wrong_arity("object|help")
        return [SimpleString(line) for line in _OBJECT_HELP]
    if sub not in (b"encoding", b"refcount", b"idletime", b"freq"):
        raise CommandError(f"unknown subcommand '{c_text(args[0])}'. Try OBJECT HELP.")
    if len(args) != 2:
        raise wrong_arity(f"object|{sub.decode()}")
    ks = ctx.keyspace
    key = args[1]
    m = ks.peek(key)  # OBJECT does not count as an access (LOOKUP_NOTOUCH)
    if m is None:
        return None
    if sub == b"encoding":
        return ks.encoding(key, m).encode()
    if sub == b"refcount":
        return ks.refcount(key, m)
    if sub == b"idletime":
        return ks.idle_seconds(key)
    raise CommandError(NO_LFU)  # FREQ: memd has no LFU eviction policy
