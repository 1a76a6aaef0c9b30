"""COMMAND's data: Redis 7.0's metadata for the commands memd implements, and memd's own entries.

Clients read the command table to route keys (cluster clients, proxies),
to learn flags (``readonly``, ``write``), or to render help (COMMAND DOCS).
Writing that metadata by hand for every command would drift from Redis; so
``redis_commands.json`` is generated from a real redis-server 7.0 by
``scripts/gen_redis_commands.py`` (committed, with the RESP3 types of each
reply kept), and memd exposes the entries of exactly the commands its
registry (:data:`memd.commands.COMMANDS`) holds: a command another module
registers picks up its metadata with no edit here. memd's own MEM.* and
MEMD.* commands, which Redis does not know, are declared in :data:`OWN`;
anything else memd registers that neither knows gets a minimal entry from
its registration (arity, write or not), never a gap.

Containers memd implements only in part (CLIENT, CONFIG, ACL...) list the
subcommands their module declares with :func:`declare_subcommands`; other
containers list Redis's.

Key positions (COMMAND GETKEYS) follow Redis 7.0's key specs exactly
(``getKeysUsingKeySpecs`` in db.c), including variadic ranges (MSET, step 2)
and ``numkeys`` arguments (ZUNIONSTORE, EVAL); the two commands whose
specs carry ``variable_flags`` (SET, BITFIELD) use their own rule for the
flags, as Redis does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from memd import __version__
from memd.commands import COMMANDS, Command, CommandError, Context, wrong_arity
from memd.int64 import parse_int64
from memd.resp import OrderedSet, SimpleString

DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "redis_commands.json")
_KEY_FLAG_ORDER = ("RO", "RW", "OW", "RM", "access", "update", "insert", "delete", "not_key", "incomplete",
                   "variable_flags")


@dataclass(frozen=True, slots=True)
class Own:
    """A memd command Redis does not have: what COMMAND INFO and COMMAND DOCS say of it."""

    summary: str
    group: str = "server"
    complexity: str = "O(1)"
    flags: tuple[str, ...] = ()
    acl: tuple[str, ...] = ("@slow",)


_MEM_READ = ("readonly",)
_MEM_WRITE = ("write", "denyoom")
OWN: dict[str, Own] = {
    "mem.put": Own("Store a memory (a JSON document with labels) under a namespace, as a new version", "generic",
                   "O(log N)", _MEM_WRITE, ("@write", "@slow")),
    "mem.get": Own("Get a memory, or one of its kept versions", "generic", "O(log N)", _MEM_READ, ("@read", "@slow")),
    "mem.del": Own("Delete a memory", "generic", "O(log N)", _MEM_WRITE[:1], ("@write", "@slow")),
    "mem.search": Own("Search memories by text, labels, filters and vector similarity", "generic",
                      "O(N) where N is the number of matches", _MEM_READ + ("noscript",), ("@read", "@slow")),
    "mem.namespaces": Own("List the namespaces that hold memories", "generic", "O(N)", _MEM_READ + ("noscript",),
                          ("@read", "@slow")),
    "mem.history": Own("List the kept versions of a memory", "generic", "O(N)", _MEM_READ + ("noscript",),
                       ("@read", "@slow")),
    "mem.index": Own("Create, list or drop a vector index over a namespace prefix", "generic", "O(N)",
                     ("write", "noscript"), ("@write", "@slow")),
    "memd.flush": Own("Flush the write buffer to SQLite now", flags=("admin", "noscript"),
                      acl=("@admin", "@slow", "@dangerous")),
    "memd.compact": Own("Run a compaction now and report what it removed", "server", "O(N)",
                        ("admin", "noscript"), ("@admin", "@slow", "@dangerous")),
    "memd.backup": Own("Take a verified backup now and reply with its path", "server", "O(N)",
                       ("admin", "noscript"), ("@admin", "@slow", "@dangerous")),
    "memd.stats": Own("memd's figures (INFO's, as a map)", flags=("loading", "stale"), acl=("@slow",)),
    "memd.metrics": Own("memd's figures in the Prometheus text format", flags=("loading", "stale"), acl=("@slow",)),
    # Redis 7.2's WAITAOF, which 7.0 lacks: its 7.2 metadata
    "waitaof": Own("Blocks until all of the preceding write commands sent by the connection are written to the "
                   "append-only file of the master and/or replicas.", "generic", "O(1)", ("noscript",),
                   ("@slow", "@connection")),
}

_declared: dict[str, frozenset[str]] = {}  # container -> the subcommands memd implements


def declare_subcommands(container: str, names: list[str] | tuple[str, ...]) -> None:
    """Say which of a container's subcommands memd implements (COMMAND lists only those)."""
    _declared[container.lower()] = frozenset(f"{container.lower()}|{n.lower()}" for n in names)


def _value(v: Any) -> Any:
    """The generated file's tagged JSON -> values memd's encoder writes exactly as Redis does."""
    if isinstance(v, dict):
        if len(v) == 1 and "~" in v:
            return OrderedSet(_value(x) for x in v["~"])
        if len(v) == 1 and "+" in v:
            return SimpleString(v["+"])
        return {k: _value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


@dataclass(slots=True)
class Meta:
    """One command's (or subcommand's) entry: the COMMAND INFO array and the COMMAND DOCS map."""

    name: str  # Redis's full name: "get", "client|list"
    info: list[Any]
    docs: dict[str, Any]
    subcommands: dict[str, Meta] = field(default_factory=dict)

    @property
    def arity(self) -> int:
        return int(self.info[1])

    @property
    def flags(self) -> list[str]:
        return [str(f) for f in self.info[2]]

    @property
    def acl_categories(self) -> list[str]:
        return [str(c) for c in self.info[6]]

    @property
    def key_specs(self) -> list[dict[str, Any]]:
        return list(self.info[8])


def _from_redis(info: list[Any], docs: dict[str, Any]) -> Meta:
    """An entry of the generated table, subcommands cut to those memd declares (if it declares any)."""
    meta = Meta(info[0], info, docs)
    if isinstance(info[9], list) and info[9]:
        allowed = _declared.get(info[0])
        sub_docs = docs.get("subcommands", {})
        subs = [_from_redis(s, sub_docs.get(s[0], {})) for s in info[9] if allowed is None or s[0] in allowed]
        meta.subcommands = {s.name: s for s in subs}
        meta.info = info[:9] + [[s.info for s in subs]]
        meta.docs = {**docs, "subcommands": {s.name: s.docs for s in subs}}
    return meta


def _from_own(name: str, cmd: Command, own: Own | None) -> Meta:
    if own is None:  # registered, but neither Redis 7.0 nor OWN knows it: what the registry says
        own = Own(f"{name.upper()} (memd)", flags=("write",) if cmd.write else ("readonly",))
    empty = OrderedSet()
    info = [name, cmd.arity, OrderedSet(SimpleString(f) for f in own.flags), 0, 0, 0,
            OrderedSet(SimpleString(c) for c in own.acl), empty, empty, empty]
    docs = {"summary": own.summary, "since": __version__, "group": own.group, "complexity": own.complexity}
    return Meta(name, info, docs)


_raw: dict[str, Any] | None = None
_cache: tuple[frozenset[bytes], dict[str, frozenset[str]], dict[str, Meta]] | None = None


def _redis_table() -> dict[str, Any]:
    global _raw
    if _raw is None:
        with open(DATA_FILE, encoding="utf-8") as fh:
            _raw = json.load(fh)["commands"]
    return _raw


_sub_arity_cache: dict[str, int] = {}


def _sub_arities() -> dict[str, int]:
    """Redis 7.0's arity of every subcommand, by full name ("command|getkeys": -4)."""
    if not _sub_arity_cache:
        for entry in _redis_table().values():
            subs = entry["info"][9]
            if isinstance(subs, list):
                _sub_arity_cache.update((str(s[0]), int(s[1])) for s in subs)
    return _sub_arity_cache


def table() -> dict[str, Meta]:
    """Every command memd implements, by lowercase name (rebuilt when the registry changes)."""
    global _cache
    names = frozenset(COMMANDS)
    if _cache is not None and _cache[0] == names and _cache[1] == _declared:
        return _cache[2]
    raw = _redis_table()
    out: dict[str, Meta] = {}
    for key in sorted(names):
        name = key.decode()
        entry = raw.get(name)
        out[name] = (_from_redis(_value(entry["info"]), _value(entry["docs"])) if entry is not None
                     else _from_own(name, COMMANDS[key], OWN.get(name)))
    _cache = (names, dict(_declared), out)
    return out


def lookup(fullname: bytes) -> Meta | None:
    """A command by its full name: ``get``, ``client|list`` (case-insensitive), as COMMAND INFO takes it."""
    name = fullname.decode(errors="replace").lower()
    base, _, sub = name.partition("|")
    meta = table().get(base)
    if meta is None or not sub:
        return meta
    return meta.subcommands.get(name)


def lookup_argv(argv: list[bytes]) -> Meta | None:
    """The command an argv runs (a container's subcommand when it has any), as COMMAND GETKEYS resolves it."""
    meta = table().get(argv[0].decode(errors="replace").lower())
    if meta is None or len(argv) == 1 or not meta.subcommands:
        return meta
    return meta.subcommands.get(f"{meta.name}|{argv[1].decode(errors='replace').lower()}")


# ---- key positions ----------------------------------------------------------------------------

def _spec_flags(spec: dict[str, Any]) -> list[str]:
    return [str(f) for f in spec["flags"]]


def has_keys(meta: Meta) -> bool:
    """Redis's doesCommandHaveKeys: a key spec that is a real key, or a command that finds its own keys."""
    return any("not_key" not in _spec_flags(s) for s in meta.key_specs) or "movablekeys" in meta.flags


def _keys_by_specs(meta: Meta, argv: list[bytes]) -> list[tuple[int, list[str]]] | None:
    """(position, flags) of each key the specs find; None where a spec cannot (Redis: invalid_spec)."""
    argc = len(argv)
    found: list[tuple[int, list[str]]] = []
    for spec in meta.key_specs:
        flags = _spec_flags(spec)
        if "not_key" in flags:
            continue
        bs, fk = spec["begin_search"], spec["find_keys"]
        first = 0
        if bs["type"] == "index":
            first = int(bs["spec"]["index"])
        elif bs["type"] == "keyword":
            keyword, startfrom = str(bs["spec"]["keyword"]).lower(), int(bs["spec"]["startfrom"])
            start = startfrom if startfrom > 0 else argc + startfrom
            end = argc - 1 if startfrom > 0 else 1
            i = start
            while i != end:
                if i >= argc or i < 1:
                    break
                if argv[i].decode(errors="replace").lower() == keyword:
                    first = i + 1
                    break
                i = i + 1 if start <= end else i - 1
            if not first:
                continue
        else:
            return None
        if fk["type"] == "range":
            rng = fk["spec"]
            step, lastkey, limit = int(rng["keystep"]), int(rng["lastkey"]), int(rng["limit"])
            if lastkey >= 0:
                last = first + lastkey
            elif not limit:
                last = argc + lastkey
            else:
                last = first + ((argc - first) // limit + lastkey)
        elif fk["type"] == "keynum":
            kn = fk["spec"]
            step = int(kn["keystep"])
            if int(kn["keynumidx"]) >= argc or first + int(kn["keynumidx"]) >= argc:
                return None
            numkeys = parse_int64(argv[first + int(kn["keynumidx"])])
            if numkeys is None or numkeys < 0:
                return None
            first += int(kn["firstkey"])
            last = first + numkeys - 1
        else:
            return None
        if last >= argc or last < first or first >= argc:
            return None
        for i in range(first, last + 1, step):
            found.append((i, flags))
        if "incomplete" in flags:
            return None
    return found


def _atoi(raw: bytes) -> int:
    """C's atoi, which Redis's fallback key finders use: leading blanks, a sign, digits, then anything."""
    text = raw.lstrip(b" \t\n\v\f\r")
    sign, i = 1, 0
    if text[:1] in (b"-", b"+"):
        sign, i = (-1 if text[:1] == b"-" else 1), 1
    j = i
    while j < len(text) and 48 <= text[j] <= 57:
        j += 1
    value = sign * int(text[i:j]) if j > i else 0
    return value if -(1 << 31) <= value < (1 << 31) else -1


Found = list[tuple[int, list[str]]]


def _generic(store: int, count: int, first: int, step: int) -> Callable[[list[bytes]], Found]:
    """Redis's genericGetKeys: ``numkeys`` keys from ``first``, then the destination (no flags)."""
    def keys(argv: list[bytes]) -> Found:
        num = _atoi(argv[count]) if count < len(argv) else 0
        if num < 1 or num > (len(argv) - first) // step:
            return []
        found: Found = [(first + i * step, []) for i in range(num)]
        return found + [(store, [])] if store else found
    return keys


def _sort_keys(argv: list[bytes]) -> Found:
    """sortGetKeys: the sorted key, and the last STORE's destination (BY/GET/LIMIT arguments skipped)."""
    found: Found = [(1, ["RO", "access"])]
    store = 0
    i = 2
    while i < len(argv):
        arg = argv[i].lower()
        if arg == b"limit":
            i += 2
        elif arg in (b"get", b"by"):
            i += 1
        elif arg == b"store" and i + 1 < len(argv):
            store = i + 1
        i += 1
    return found + [(store, ["OW", "update"])] if store else found


def _set_keys(argv: list[bytes]) -> Found:
    """setGetKeys: SET's key is read too when GET is given."""
    get = any(a.lower() == b"get" for a in argv[3:])
    return [(1, ["RW", "access", "update"] if get else ["OW", "update"])]


def _bitfield_keys(argv: list[bytes]) -> Found:
    """bitfieldGetKeys: read-only when every operation is a GET (OVERFLOW aside)."""
    readonly, i = True, 2
    while i < len(argv):
        arg, rem = argv[i].lower(), len(argv) - i - 1
        if arg == b"get" and rem >= 2:
            i += 3
        elif arg in (b"set", b"incrby") and rem >= 3:
            readonly = False
            break
        elif arg == b"overflow" and rem >= 1:
            i += 2
        else:
            readonly = False
            break
    return [(1, ["RO", "access"] if readonly else ["RW", "access", "update"])]


# Redis's getkeys_proc of each command that has one: used where the key specs cannot tell (invalid,
# incomplete or 'unknown' specs, variable flags), exactly as Redis falls back to them
_PROCS: dict[str, Callable[[list[bytes]], Found]] = {
    **dict.fromkeys(("zunionstore", "zinterstore", "zdiffstore"), _generic(1, 2, 3, 1)),
    **dict.fromkeys(("zunion", "zinter", "zdiff", "zintercard", "sintercard", "lmpop", "zmpop"),
                    _generic(0, 1, 2, 1)),
    **dict.fromkeys(("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro", "blmpop", "bzmpop"),
                    _generic(0, 2, 3, 1)),
    "sort": _sort_keys,
    "sort_ro": lambda argv: [(1, ["RO", "access"])],
    "set": _set_keys,
    "bitfield": _bitfield_keys,
}


def _find_keys(meta: Meta, argv: list[bytes]) -> Found:
    """getKeysFromCommandWithSpecs: the specs when they are reliable, else the command's own finder."""
    specs = meta.key_specs
    has_spec = any("not_key" not in _spec_flags(s) for s in specs)
    varflags = any("variable_flags" in _spec_flags(s) for s in specs)
    if has_spec and not varflags:
        found = _keys_by_specs(meta, argv)
        if found is not None:
            return found
    proc = _PROCS.get(meta.name)
    return proc(argv) if proc is not None else []


def get_keys(argv: list[bytes]) -> list[tuple[bytes, OrderedSet]]:
    """COMMAND GETKEYS / GETKEYSANDFLAGS: each key of ``argv`` (a whole command) with its flags."""
    meta = lookup_argv(argv)
    if meta is None:
        raise CommandError("Invalid command specified")
    if not has_keys(meta):
        raise CommandError("The command has no key arguments")
    arity = meta.arity
    if arity > 0 and arity != len(argv) or len(argv) < -arity:
        raise CommandError("Invalid number of arguments specified for command")
    keys = _find_keys(meta, argv)
    if not keys:
        if "no_mandatory_keys" in meta.flags:
            return []
        raise CommandError("Invalid arguments specified for command")
    return [(argv[pos], OrderedSet(SimpleString(f) for f in _KEY_FLAG_ORDER if f in flags)) for pos, flags in keys]


def key_positions(argv: list[bytes]) -> list[int]:
    """The positions in ``argv`` of the keys a command touches ([] when it has none or they cannot be told)."""
    meta = lookup_argv(argv)
    if meta is None or not has_keys(meta):
        return []
    return [pos for pos, _ in _find_keys(meta, argv)]


def subcommand(container: str, args: list[bytes], arities: dict[bytes, int], ctx: Context | None = None) -> bytes:
    """The lowercase subcommand of ``args`` after its arity check, with Redis's error texts.

    ``arities`` names the subcommands memd implements; each is checked against Redis 7.0's arity
    when Redis has it (the table is the reference), else the one given (memd's or Redis 7.2's
    additions). Arities count as Redis does: the container and the subcommand included.
    With ``ctx``, the connection's last command becomes ``container|sub`` (CLIENT LIST's cmd=).
    """
    sub = args[0].lower()
    arity = arities.get(sub)
    if arity is not None:
        arity = _sub_arities().get(f"{container}|{sub.decode(errors='replace')}", arity)
    if arity is None:
        raise CommandError(f"unknown subcommand '{args[0].decode(errors='replace')[:128]}'. "
                           f"Try {container.upper()} HELP.")
    n = len(args) + 1
    if arity >= 0 and n != arity or arity < 0 and n < -arity:
        raise wrong_arity(f"{container}|{sub.decode()}")
    if ctx is not None and ctx.multi is None:  # (run by EXEC, Redis's cmd= stays exec)
        ctx.last_cmd = b"%b|%b" % (container.encode(), sub)
    return sub
