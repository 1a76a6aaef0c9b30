"""Fuzz inputs -> pipelines of memd's real commands, with every key inside the fuzzer's prefix.

Why a grammar: random bytes almost never spell a command, so a dispatch
fuzzer fed raw bytes would test the parser again. Here the input bytes pick
a command from memd's own table and fill its arguments from pools of what
its handlers parse (edge integers, floats, ranges, option words, JSON,
raw bytes); libFuzzer's coverage feedback then steers those choices.

The fuzzer's commands must never touch what a second client owns: every
key a command names starts with ``f:``, every MEM.* namespace is ``f`` or
under it, and commands that reach the whole keyspace or the daemon
(SHUTDOWN, FLUSHALL, FLUSHDB, MEMD.*) are left out. :func:`allowed` states
that rule for any parsed command, so bytes the fuzzer adds outside the
grammar (inline spellings, trailing garbage) are held to it too.
"""

from __future__ import annotations

from collections.abc import Callable

from memd.commands import COMMANDS, load_all

KEY_PREFIX = b"f:"
NAMESPACE = b"f"
# Commands the dispatch fuzzer does not send: what reaches every client's data (SHUTDOWN, the flushes,
# SWAPDB); a blocking pop, which with a timeout of 0 waits for ever while the target counts replies; the
# subscriber modes, where a reply is not one per command; scripts, whose keys the target cannot check
# against its prefix. Each has its own differential and crash tests.
EXCLUDED = frozenset({b"shutdown", b"flushall", b"flushdb", b"swapdb",
                      b"blpop", b"brpop", b"blmove", b"brpoplpush", b"blmpop", b"bzpopmin", b"bzpopmax", b"bzmpop",
                      b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe", b"punsubscribe", b"sunsubscribe",
                      b"eval", b"evalsha", b"eval_ro", b"evalsha_ro", b"script"})
# subcommands that reach other clients or the daemon (CLIENT KILL), or stop this client's replies
# (CLIENT REPLY OFF: the target counts replies), or change daemon-wide settings and figures
EXCLUDED_SUB = {b"client": frozenset({b"kill", b"reply", b"pause"}), b"config": frozenset({b"set", b"resetstat"})}

# Where a command's keys are (Redis's key specs, for memd's table).
NO_KEYS = frozenset({b"acl", b"auth", b"client", b"command", b"config", b"dbsize", b"discard", b"echo", b"exec",
                     b"hello", b"info", b"keys", b"multi", b"ping", b"quit", b"reset", b"scan", b"select", b"time",
                     b"unwatch", b"waitaof", b"mem.namespaces"})
ALL_KEYS = frozenset({b"del", b"exists", b"unlink", b"mget", b"watch", b"touch"})
PAIR_KEYS = frozenset({b"mset", b"msetnx"})
TWO_KEYS = frozenset({b"lcs", b"rename", b"renamenx", b"copy"})  # LCS key1 key2 [options], RENAME src dst...
SECOND_KEY = frozenset({b"object"})  # OBJECT subcommand key
SORTS = frozenset({b"sort", b"sort_ro"})  # SORT key [BY pattern] [GET pattern] [STORE dst]: see _sort_keys_ok
KEYS_AFTER_FIRST = frozenset({b"bitop"})  # BITOP op destkey srckey...
MEM_ITEM = frozenset({b"mem.put", b"mem.get", b"mem.del", b"mem.history"})  # namespace, key, ...
MEM_PREFIX = frozenset({b"mem.search"})  # namespace prefix, options...

INTS = (b"0", b"1", b"-1", b"2", b"3", b"10", b"-10", b"100", b"1000", b"4294967296", b"9223372036854775807",
        b"-9223372036854775808", b"9223372036854775808", b"-9223372036854775809", b"9223372036854775806",
        b"01", b"+1", b" 1", b"1.0", b"", b"-0", b"99999999999999999999", b"1e3", b"0x10", b"2147483648")
FLOATS = (b"0", b"1.5", b"-1.5", b"inf", b"-inf", b"+inf", b"nan", b"1e308", b"1e309", b"-1e309", b"0.1", b"-0",
          b"1e-320", b"3.0", b".5", b"5.", b"1e", b"  2", b"0x1p3", b"17976931348623157e292")
RANGES = (b"(1", b"(-inf", b"(+inf", b"[a", b"(a", b"+", b"-", b"[", b"(", b"[f:1", b"(f:", b"-inf", b"+inf",
          b"(1.5", b"((1", b"[\xff")
WORDS = (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR", b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL", b"GET",
         b"PERSIST", b"WITHSCORES", b"WITHSCORE", b"LIMIT", b"BYSCORE", b"BYLEX", b"REV", b"MATCH", b"COUNT",
         b"TYPE", b"TTL", b"REFRESHTTL", b"QUERY", b"FILTER", b"OFFSET", b"PREFIX", b"SUFFIX", b"MAXDEPTH",
         b"SETNAME", b"AUTH", b"DOCS", b"LIST", b"INFO", b"ID", b"GETNAME", b"SETINFO", b"lib-name", b"lib-ver",
         b"HELP", b"RESETSTAT", b"*", b"f:*", b"f:?", b"[a-z]*", b"string", b"hash", b"list", b"set", b"zset",
         b"none", b"all", b"default", b"keyspace", b"stats", b"clients", b"f", b"f.a", b"f.*", b"*.a", b"memory",
         b"AND", b"OR", b"XOR", b"NOT", b"BIT", b"BYTE", b"LEN", b"IDX", b"MINMATCHLEN", b"WITHMATCHLEN",
         b"OVERFLOW", b"SAT", b"WRAP", b"FAIL", b"SET", b"INCRBY", b"i8", b"u4", b"i64", b"#1",
         b"REPLACE", b"DB", b"ENCODING", b"REFCOUNT", b"IDLETIME", b"FREQ", b"BY", b"STORE", b"ALPHA", b"ASC",
         b"DESC", b"nosort", b"#")
JSONS = (b'{"a":1}', b'{"a":"x\\u0000y zebra","b":1}', b"{}", b"[1]", b'{"a":{"b":[1,2]}}', b'{"stars":3}',
         b'{"kind":"fact","text":"preferences of the user"}', b'{"a":1e400}', b'{"a":NaN}', b'{"a":"\\ud800"}',
         b'{"a":{"$gt":1}}', b'{"a":{"$in":[1,"x",null]}}', b'{"a":{"$bogus":1}}', b'{"a":null}', b'"x"', b"null",
         b'{"a":[' * 40, b'{"a":true,"b":false}', b'{"\xc3\xa9":"\xc3\xa9t\xc3\xa9"}', b"{", b'{"a":{"$ne":2}}')
QUERIES = (b"zebra", b"user*", b"NEAR(a b)", b'"unbalanced', b"a AND", b"prefer", b"*", b"-", b"\xc3\xa9t\xc3\xa9",
           b"x OR y", b"(", b"a:b")
LABELS = (b"a", b"b", b"c", b"\xc3\xa9", b"*", b"x y", b"", b"0")


class Source:
    """Reads choices out of a fuzz input; past its end every choice is 0 (inputs stay meaningful when cut)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, n: int) -> int:
        """A choice in range(n) (n <= 65536)."""
        if n <= 256:
            return self.byte() % n
        return (self.byte() | self.byte() << 8) % n

    def pick(self, items: tuple[bytes, ...]) -> bytes:
        return items[self.below(len(items))]

    def raw(self, most: int) -> bytes:
        n = self.below(most + 1)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.data)


def fuzz_key(src: Source) -> bytes:
    choice = src.below(16)
    if choice < 12:
        return KEY_PREFIX + b"%d" % (choice % 8)
    if choice < 15:
        return KEY_PREFIX + src.raw(8)
    return KEY_PREFIX


def namespace(src: Source) -> bytes:
    labels = [NAMESPACE] + [src.pick(LABELS) for _ in range(src.below(3))]
    return b".".join(labels)


def mem_key(src: Source) -> bytes:
    choice = src.below(8)
    return src.raw(6) if choice == 7 else b"k%d" % choice


def value(src: Source) -> bytes:
    """Any non-key argument: what some handler parses, or bytes."""
    kind = src.below(12)
    if kind == 0:
        return src.pick(INTS)
    if kind == 1:
        return b"%d" % (int.from_bytes(bytes(src.byte() for _ in range(8)), "little", signed=True)
                        >> src.below(64))
    if kind == 2:
        return src.pick(FLOATS)
    if kind == 3:
        return src.pick(RANGES)
    if kind in (4, 5, 6):
        return src.pick(WORDS)
    if kind == 7:
        return fuzz_key(src)  # members, fields, patterns
    if kind == 8:
        return src.pick(JSONS)
    if kind == 9:
        return src.pick(QUERIES)
    if kind == 10:
        return b"%d" % src.below(20)
    return src.raw(24)


def _names() -> tuple[bytes, ...]:
    load_all()
    return tuple(sorted(n for n in COMMANDS if n not in EXCLUDED and not n.startswith(b"memd.")))


NAMES = _names()


def arg_count(src: Source, name: bytes) -> int:
    arity = COMMANDS[name].arity
    if src.below(16) == 0:
        return src.below(6)  # any count: wrong-arity paths too
    if arity >= 0:
        return arity - 1
    return -arity - 1 + src.below(6)


def build_command(src: Source) -> list[bytes]:
    """One command whose keys are all inside the fuzzer's prefix (see :func:`allowed`)."""
    name = NAMES[src.below(len(NAMES))]
    n = arg_count(src, name)
    args: list[bytes] = []
    for i in range(n):
        if name in SORTS and i and args[-1].lower() in _SORT_KEY_OPTIONS:
            args.append(fuzz_key(src))  # a BY/GET pattern or a STORE destination: inside the prefix
        elif name in SECOND_KEY:
            args.append(fuzz_key(src) if i == 1 else src.pick(WORDS))
        elif name in KEYS_AFTER_FIRST:
            args.append(fuzz_key(src) if i else src.pick(WORDS))
        elif name in ALL_KEYS or (i == 0 and name not in NO_KEYS and name not in MEM_ITEM | MEM_PREFIX) \
                or (name in PAIR_KEYS and i % 2 == 0) or (name in TWO_KEYS and i < 2):
            args.append(fuzz_key(src))
        elif i == 0 and name in MEM_ITEM | MEM_PREFIX:
            args.append(namespace(src))
        elif i == 1 and name in MEM_ITEM:
            args.append(mem_key(src))
        elif i == 2 and name == b"mem.put":
            args.append(src.pick(JSONS) if src.below(4) else b'{"n":%d,"t":"%b"}' % (src.byte(), src.raw(8)))
        else:
            args.append(value(src))
    if args and args[0].lower() in EXCLUDED_SUB.get(name, ()):
        args[0] = b"HELP"  # (CONFIG SET: "set" is also a type name in the pools)
    spelled = name.upper() if src.below(4) == 0 else name
    return [spelled, *args]


_SORT_KEY_OPTIONS = (b"by", b"get", b"store")


def _sort_keys_ok(args: list[bytes]) -> bool:
    """SORT's options read as Redis reads them: each BY/GET pattern that names keys and the STORE
    destination inside the prefix (a pattern without '*' reads no key)."""
    j = 1
    while j < len(args):
        opt, left = args[j].lower(), len(args) - j - 1
        if opt == b"limit" and left >= 2:
            j += 3
        elif opt in _SORT_KEY_OPTIONS and left >= 1:
            target = args[j + 1]
            if not target.startswith(KEY_PREFIX) and (opt == b"store" or b"*" in target.split(b"\0", 1)[0]):
                return False
            j += 2
        else:
            j += 1
    return True


def _mem_namespace_ok(ns: bytes) -> bool:
    return ns == NAMESPACE or ns.startswith(NAMESPACE + b".")


def allowed(argv: list[bytes]) -> bool:
    """Whether a parsed command keeps to the fuzzer's prefix (the rule :func:`build_command` follows)."""
    name = argv[0].lower()
    if name in EXCLUDED or name.startswith(b"memd."):
        return False
    if len(argv) > 1 and argv[1].lower() in EXCLUDED_SUB.get(name, ()):
        return False
    if name in (b"xread", b"xreadgroup") and any(a.lower() == b"block" for a in argv[1:]):
        return False  # BLOCK 0 waits for ever, as a blocking pop does
    if name not in COMMANDS or name in NO_KEYS:
        return True  # unknown commands only get an error
    args = argv[1:]
    if name in MEM_ITEM | MEM_PREFIX:
        return not args or _mem_namespace_ok(args[0])
    if name in ALL_KEYS:
        keys = args
    elif name in PAIR_KEYS:
        keys = args[::2]
    elif name in TWO_KEYS:
        keys = args[:2]
    elif name in KEYS_AFTER_FIRST:
        keys = args[1:]
    elif name in SECOND_KEY:
        keys = args[1:2]
    elif name in SORTS:
        if not _sort_keys_ok(args):
            return False
        keys = args[:1]
    else:
        keys = args[:1]
    return all(k.startswith(KEY_PREFIX) for k in keys)


def to_inline(argv: list[bytes], src: Source) -> bytes:
    """An inline spelling (what telnet or redis-cli's raw mode sends); its parse may differ from argv."""
    return b" ".join(argv) + (b"\r\n" if src.below(4) else b"\n")


def frame(argv: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in argv)


Breach = Callable[[int, int, int], bytes]
BREACHES: tuple[Breach, ...] = (  # (max_bulk, max_args, max_inline) -> bytes over one limit
    lambda bulk, args, line: b"*1\r\n$%d\r\n" % (bulk + 1),
    lambda bulk, args, line: b"*%d\r\n" % (args + 1),
    lambda bulk, args, line: b"PING " + b"x" * line + b"\r\n",
    lambda bulk, args, line: b"*1\r\n$" + b"9" * 30 + b"\r\n",
    lambda bulk, args, line: b"*2\r\n$4\r\nECHO\r\n:1\r\n",
)
