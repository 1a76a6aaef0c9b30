"""Agent memory commands: MEM.PUT MEM.GET MEM.DEL MEM.SEARCH MEM.NAMESPACES MEM.HISTORY MEM.INDEX.

The contract (argument forms, reply JSON, errors) is docs/memory.md. This
module parses and validates arguments and renders replies; the semantics
(versions, TTL, history, search) live in :mod:`memd.engine.memories`.

Searches, namespace listings and history read SQLite only (searches and
listings in a worker thread, so a slow one stalls no other client); when the
buffer holds MEM writes they could see, they first flush (a Deferred reply):
exact read-your-writes. That is also why they are refused inside MULTI.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from memd import jsontext
from memd.commands import CommandError, Context, Deferred, batched, command, parse_int
from memd.engine.memories import MemItem, MemVersion, Put, parse_filter, under
from memd.resp import SimpleString

MAX_NAME_BYTES = 1024
MAX_LABELS = 64
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600
MAX_SEARCH_LIMIT = 1000
MAX_NAMESPACES_LIMIT = 10_000


# ---- argument parsing ----------------------------------------------------------------------

def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise CommandError(f"{what} is not valid UTF-8") from None


def parse_namespace(raw: bytes, *, root: bool = False, what: str = "namespace") -> str:
    """A dotted namespace; ``root`` also allows "" (every namespace, for prefixes)."""
    ns = _text(raw, what)
    if not ns:
        if root:
            return ns
        raise CommandError(f"invalid {what} '': it needs at least one label")
    if len(raw) > MAX_NAME_BYTES or ns.count(".") >= MAX_LABELS:
        raise CommandError(f"invalid {what}: at most {MAX_NAME_BYTES} bytes and {MAX_LABELS} labels")
    if "" in ns.split("."):
        raise CommandError(f"invalid {what} '{ns}': labels must be non-empty and contain no '.'")
    return ns


def parse_key(raw: bytes) -> str:
    key = _text(raw, "key")
    if not key or len(raw) > MAX_NAME_BYTES:
        raise CommandError(f"invalid key: it must be 1 to {MAX_NAME_BYTES} bytes")
    return key


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(raw: bytes, what: str, *, nonfinite: bool = False) -> tuple[Any, str]:
    """Strict JSON (UTF-8, no NaN/Infinity, no lone surrogates SQLite could not store).

    Returns the value and its compact text (what memd stores), from one parse and one dump.
    ``nonfinite`` (FILTER only, never a stored value) also accepts ``NaN``, ``Infinity``,
    ``-Infinity`` and numbers beyond a double's range: Python's json writes
    ``float("inf")`` as ``Infinity``, and LangGraph filters compare against it.
    orjson where it gives ``json``'s very answer (see :mod:`memd.jsontext`), ``json`` elsewhere.
    """
    if not nonfinite:
        fast = jsontext.compact(raw)
        if fast is not None:
            return fast
    try:
        obj = json.loads(_text(raw, what), parse_constant=None if nonfinite else _reject_constant)
        # allow_nan=False: 1e400 parses to inf, which would be written back as Infinity (not JSON)
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=nonfinite)
        text.encode()
    except UnicodeEncodeError:
        raise CommandError(f"{what} contains an unpaired UTF-16 surrogate escape") from None
    except (ValueError, RecursionError) as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from None
    return obj, text


def parse_value(ctx: Context, raw: bytes) -> str:
    """The value as compact JSON text of an object, within ``memory.max_value_bytes``."""
    limit = ctx.engine.memories.max_value_bytes
    if len(raw) > limit:
        raise CommandError(f"value is {len(raw)} bytes; memory.max_value_bytes is {limit}")
    obj, text = load_json(raw, "value")
    if not isinstance(obj, dict):
        raise CommandError(f"value must be a JSON object, not {type(obj).__name__}")
    return text


def parse_ttl_ms(raw: bytes) -> int:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise CommandError(f"TTL must be a number of seconds > 0 and <= {MAX_TTL_SECONDS}")
    return max(1, math.ceil(seconds * 1000))


def parse_range(raw: bytes, name: str, low: int, high: int | None = None) -> int:
    bound = f"between {low} and {high}" if high is not None else f">= {low}"
    n = parse_int(raw, f"{name} must be an integer {bound}")
    if n < low or (high is not None and n > high):
        raise CommandError(f"{name} must be an integer {bound}")
    return n


class _Options:
    """Keyword options after the positional arguments: ``NAME value`` pairs and flags.

    ``VECTOR path blob`` (``vectors``: True) may repeat; it collects into ``vectors``.
    """

    def __init__(self, args: list[bytes], valued: set[bytes], flags: set[bytes], vectors: bool = False) -> None:
        self.values: dict[bytes, bytes] = {}
        self.flags: set[bytes] = set()
        self.vectors: list[tuple[str, bytes]] = []
        i = 0
        while i < len(args):
            opt = args[i].upper()
            if vectors and opt == b"VECTOR" and i + 2 < len(args):
                path = _text(args[i + 1], "VECTOR path")
                if not path or len(args[i + 1]) > MAX_NAME_BYTES:
                    raise CommandError(f"invalid VECTOR path: it must be 1 to {MAX_NAME_BYTES} bytes")
                self.vectors.append((path, args[i + 2]))
                i += 3
            elif opt in flags:
                self.flags.add(opt)
                i += 1
            elif opt in valued and i + 1 < len(args):
                self.values[opt] = args[i + 1]
                i += 2
            else:
                raise CommandError("syntax error")


# ---- reply rendering -------------------------------------------------------------------------

def iso(ms: int | None) -> str | None:
    """ISO-8601 UTC with milliseconds and a 'Z' (what docs/memory.md promises)."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_item(item: MemItem, with_score: bool = False) -> bytes:
    """The item's JSON, splicing the stored value text in as is (no re-parse)."""
    text = (f'{{"namespace":{_dump(item.ns)},"key":{_dump(item.key)},"value":{item.value},'
            f'"version":{item.version},"created_at":{_dump(iso(item.created_at))},'
            f'"updated_at":{_dump(iso(item.updated_at))},"expires_at":{_dump(iso(item.expires_at))}')
    if with_score:
        text += f',"score":{_dump(item.score)}'
    return (text + "}").encode()


def render_version(v: MemVersion) -> bytes:
    return (f'{{"version":{v.version},"value":{v.value},"created_at":{_dump(iso(v.created_at))},'
            f'"updated_at":{_dump(iso(v.updated_at))},"superseded_at":{_dump(iso(v.superseded_at))},'
            f'"deleted":{_dump(v.deleted)}}}').encode()


# ---- per-namespace access ([memory] access rules) ----------------------------------------------

Rules = list[tuple[str, bool, bool]]  # (prefix, may read, may write), longest prefix first


def _rules(ctx: Context) -> Rules:
    """The access rules as they apply to this peer; empty when it is unrestricted."""
    rules = ctx.server.namespace_rules if ctx.server is not None else ()
    if not rules or ctx.peer_uid in (0, os.getuid()):
        return []
    uid, groups = ctx.peer_uid, {ctx.peer_gid, *ctx.peer_groups}
    out = []
    for r in sorted(rules, key=lambda r: len(r.prefix), reverse=True):
        write = uid in r.write_uids or not groups.isdisjoint(r.write_gids)
        read = write or uid in r.read_uids or not groups.isdisjoint(r.read_gids)
        out.append((r.prefix, read, write))
    return out


def _governing(rules: Rules, ns: str) -> tuple[str, bool, bool] | None:
    return next((r for r in rules if under(ns, r[0])), None)


def check_access(ctx: Context, ns: str, write: bool, rules: Rules | None = None) -> None:
    """-NOPERM unless this peer may read (or write) namespace ``ns``."""
    rule = _governing(_rules(ctx) if rules is None else rules, ns)
    if rule is not None and not rule[2 if write else 1]:
        raise CommandError(f"uid {ctx.peer_uid} may not {'write' if write else 'read'} namespace '{ns}' "
                           f"(memory.access rule for '{rule[0]}')", prefix="NOPERM")


def _after_flush_if(ctx: Context, pending: bool, run: Callable[[], Awaitable[Any]]) -> Deferred:
    """Await ``run`` — after a flush when the buffer holds MEM writes it must see.

    A write ``run`` makes (REFRESHTTL) is acknowledged only once durable, like any write.
    """
    engine = ctx.engine

    async def flush_then_run() -> Any:
        if pending:
            await engine.flush()
        before = engine.last_lsn
        reply = await run()
        if engine.last_lsn != before:
            await engine.wait_durable()
        return reply
    return Deferred(flush_then_run)


# ---- commands --------------------------------------------------------------------------------

def _parse_put(ctx: Context, args: list[bytes]) -> Put:
    ns, key, value = parse_namespace(args[0]), parse_key(args[1]), parse_value(ctx, args[2])
    opts = _Options(args[3:], {b"TTL"}, set(), vectors=True)
    check_access(ctx, ns, write=True)
    ttl = opts.values.get(b"TTL")
    ttl_ms = None if ttl is None else parse_ttl_ms(ttl)
    return ns, key, value, ttl_ms, tuple(opts.vectors)


@command("mem.put", -4, write=True)
def mem_put(ctx: Context, args: list[bytes]) -> Any:
    try:
        return ctx.engine.memories.put(*_parse_put(ctx, args))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


@batched("mem.put")
def mem_put_run(ctx: Context, calls: list[list[bytes]]) -> list[Any]:
    """A run of MEM.PUTs: each checked alone (a bad one gets its error and writes nothing), all
    written as one record (see Memories.put_many).

    Each put is checked as :func:`_parse_put` checks it, in the same order (so a put with two
    faults gets the same error), but what only depends on the namespace is worked out once per
    namespace of the run: bulk ingest sends thousands of puts to a handful of namespaces, and
    parsing and access-checking each one again was ~5 µs of event loop per put.
    """
    replies: list[Any] = [None] * len(calls)
    puts: list[Put] = []
    slots: list[int] = []
    rules = _rules(ctx)
    names: dict[bytes, str] = {}  # raw namespace -> parsed (valid ones only: a bad one raises each time)
    writable: set[str] = set()  # namespaces this peer may write (refusals are checked again: fresh errors)
    for i, args in enumerate(calls):
        try:
            if len(args) != 3:  # options (TTL, VECTOR): the general path
                puts.append(_parse_put(ctx, args))
                slots.append(i)
                continue
            raw = args[0]
            ns = names.get(raw)
            if ns is None:
                ns = names[raw] = parse_namespace(raw)
            key, value = parse_key(args[1]), parse_value(ctx, args[2])
            if ns not in writable:
                check_access(ctx, ns, write=True, rules=rules)
                writable.add(ns)
        except CommandError as exc:
            replies[i] = exc
            continue
        puts.append((ns, key, value, None, ()))
        slots.append(i)
    for i, result in zip(slots, ctx.engine.memories.put_many(puts), strict=True):
        replies[i] = CommandError(str(result)) if isinstance(result, ValueError) else result
    return replies


@command("mem.get", -3)
def mem_get(ctx: Context, args: list[bytes]) -> Any:
    ns, key = parse_namespace(args[0]), parse_key(args[1])
    opts = _Options(args[2:], set(), {b"REFRESHTTL"})
    check_access(ctx, ns, write=False)
    if b"REFRESHTTL" in opts.flags:
        ctx.engine.check_writable()  # a refresh is a write: refused like one (watchdog, failed WAL)
    item = ctx.engine.memories.get(ns, key, refresh_ttl=b"REFRESHTTL" in opts.flags)
    return None if item is None else render_item(item)


@command("mem.del", 3, write=True)
def mem_del(ctx: Context, args: list[bytes]) -> Any:
    ns, key = parse_namespace(args[0]), parse_key(args[1])
    check_access(ctx, ns, write=True)
    return int(ctx.engine.memories.delete(ns, key))


@command("mem.search", -2, no_multi=True)
def mem_search(ctx: Context, args: list[bytes]) -> Any:
    prefix = parse_namespace(args[0], root=True, what="namespace prefix")
    opts = _Options(args[1:], {b"QUERY", b"FILTER", b"LIMIT", b"OFFSET", b"VECTOR"}, {b"REFRESHTTL"})
    query = None
    if b"QUERY" in opts.values:
        query = _text(opts.values[b"QUERY"], "QUERY")
        if not query.strip():
            raise CommandError("QUERY must not be empty (leave QUERY out to list by recency)")
    conds = []
    if b"FILTER" in opts.values:
        try:
            conds = parse_filter(load_json(opts.values[b"FILTER"], "FILTER", nonfinite=True)[0])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    limit = parse_range(opts.values.get(b"LIMIT", b"10"), "LIMIT", 0, MAX_SEARCH_LIMIT)
    offset = parse_range(opts.values.get(b"OFFSET", b"0"), "OFFSET", 0)
    refresh = b"REFRESHTTL" in opts.flags
    if refresh:
        ctx.engine.check_writable()  # a refresh is a write: refused like one (watchdog, failed WAL)
    memories = ctx.engine.memories
    rules = _rules(ctx)
    if rules and not any(r[1] for r in rules if under(r[0], prefix)):  # nothing readable below either
        check_access(ctx, prefix, write=False, rules=rules)
    scope = tuple((p, read) for p, read, _ in rules) if any(not r[1] for r in rules) else ()
    vector = None
    if b"VECTOR" in opts.values:  # (after the access check: its errors describe the index)
        try:
            vector = memories.query_vector(prefix, opts.values[b"VECTOR"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    async def run() -> list[bytes]:
        if not limit:
            return []
        return [render_item(item, with_score=True)
                for item in await memories.search(prefix, query, conds, limit, offset, refresh, scope, vector)]
    pending = memories.pending(prefix) or (vector is not None and memories.index_pending())
    return _after_flush_if(ctx, pending, run)


def _label_match(labels: list[str], pattern: list[str]) -> bool:
    return all(p == "*" or p == label for label, p in zip(labels, pattern, strict=False))


@command("mem.namespaces", -1, no_multi=True)
def mem_namespaces(ctx: Context, args: list[bytes]) -> Any:
    opts = _Options(args, {b"PREFIX", b"SUFFIX", b"MAXDEPTH", b"LIMIT", b"OFFSET"}, set())
    prefix = parse_namespace(opts.values.get(b"PREFIX", b""), root=True, what="PREFIX").split(".")
    suffix = parse_namespace(opts.values[b"SUFFIX"], what="SUFFIX").split(".") if b"SUFFIX" in opts.values else []
    prefix, suffix = [p for p in prefix if p], [s for s in suffix if s]
    depth = parse_range(opts.values[b"MAXDEPTH"], "MAXDEPTH", 1) if b"MAXDEPTH" in opts.values else None
    limit = parse_range(opts.values.get(b"LIMIT", b"100"), "LIMIT", 0, MAX_NAMESPACES_LIMIT)
    offset = parse_range(opts.values.get(b"OFFSET", b"0"), "OFFSET", 0)
    literal = ".".join(prefix[:prefix.index("*")] if "*" in prefix else prefix)  # what SQL can narrow by
    memories = ctx.engine.memories
    rules = _rules(ctx)

    async def run() -> list[bytes]:
        found = set()
        for ns in await memories.namespaces(literal):
            labels = ns.split(".")
            if len(labels) < max(len(prefix), len(suffix)) or not _label_match(labels, prefix) or \
                    not _label_match(labels[::-1], suffix[::-1]):
                continue
            rule = _governing(rules, ns)
            if rule is not None and not rule[1]:
                continue  # a namespace this peer may not read is not listed either
            found.add(tuple(labels[:depth]) if depth is not None else tuple(labels))
        # label-wise order (tuple order, as LangGraph sorts namespaces), not the dotted string's
        return [".".join(labels).encode() for labels in sorted(found)[offset:offset + limit]]
    return _after_flush_if(ctx, memories.pending(literal), run)


@command("mem.history", -3, no_multi=True)
def mem_history(ctx: Context, args: list[bytes]) -> Any:
    ns, key = parse_namespace(args[0]), parse_key(args[1])
    opts = _Options(args[2:], {b"LIMIT"}, set())
    limit = parse_range(opts.values[b"LIMIT"], "LIMIT", 0) if b"LIMIT" in opts.values else None
    check_access(ctx, ns, write=False)
    memories = ctx.engine.memories

    async def run() -> list[bytes]:  # a point read: on the loop, like GET
        return [render_version(v) for v in memories.history(ns, key, limit)]
    return _after_flush_if(ctx, memories.pending_item(ns, key), run)



# ---- vector indexes ----------------------------------------------------------------------------

def _index_prefix(ctx: Context, raw: bytes) -> str:
    prefix = parse_namespace(raw, root=True, what="index prefix")
    # an index decides what every write under it may carry, and dropping it deletes their vectors:
    # the peer must be allowed to write the prefix and every namespace a rule guards below it
    rules = _rules(ctx)
    check_access(ctx, prefix, write=True, rules=rules)
    for rule_prefix, _, write in rules:
        if not write and under(rule_prefix, prefix):
            raise CommandError(f"uid {ctx.peer_uid} may not write namespace '{rule_prefix}' (memory.access rule "
                               f"for '{rule_prefix}'), which vector index prefix '{prefix}' covers",
                               prefix="NOPERM")
    return prefix


def _fields(raw: bytes) -> str:
    """FIELDS: a JSON array of the paths clients embed (LangGraph's ``fields``), stored as compact JSON."""
    fields, text = load_json(raw, "FIELDS")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields):
        raise CommandError('FIELDS must be a non-empty JSON array of non-empty strings, e.g. ["$"] or ["text"]')
    return text


def render_index(prefix: str, spec: tuple[int, str, str], stats: tuple[int, int, int, bool]) -> bytes:
    dims, distance, fields = spec
    vectors, memories, nbytes, ann = stats
    return (f'{{"prefix":{_dump(prefix)},"dims":{dims},"distance":{_dump(distance)},"fields":{fields},'
            f'"vectors":{vectors},"memories":{memories},"bytes":{nbytes},"ann":{_dump(ann)}}}').encode()


@command("mem.index", -2, no_multi=True)
def mem_index(ctx: Context, args: list[bytes]) -> Any:
    """MEM.INDEX CREATE prefix DIMS n [DISTANCE d] [FIELDS json] | LIST | DROP prefix."""
    sub = args[0].upper()
    memories = ctx.engine.memories
    if sub == b"CREATE" and len(args) >= 2:
        prefix = _index_prefix(ctx, args[1])
        opts = _Options(args[2:], {b"DIMS", b"DISTANCE", b"FIELDS"}, set())
        if b"DIMS" not in opts.values:
            raise CommandError("MEM.INDEX CREATE needs DIMS n (the length of the client's embeddings)")
        dims = parse_int(opts.values[b"DIMS"], "DIMS must be an integer")
        distance = _text(opts.values.get(b"DISTANCE", b"cosine"), "DISTANCE").lower()
        fields = _fields(opts.values[b"FIELDS"]) if b"FIELDS" in opts.values else '["$"]'
        ctx.engine.check_writable()

        def create() -> SimpleString:
            try:
                memories.create_index(prefix, dims, distance, fields)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            return SimpleString("OK")
        old = memories.indexes().get(prefix)
        if old is None or old[:2] == (dims, distance) or not memories.pending(prefix):
            return create()

        async def run() -> SimpleString:
            return create()
        # a new DIMS or DISTANCE needs the vectors held counted exactly: a buffered delete or new
        # version without vectors must count as removing the stored ones, so flush them first
        return _after_flush_if(ctx, True, run)
    if sub == b"DROP" and len(args) == 2:
        prefix = _index_prefix(ctx, args[1])
        ctx.engine.check_writable()
        return int(memories.drop_index(prefix))
    if sub == b"LIST" and len(args) == 1:
        async def run() -> list[bytes]:
            return [render_index(p, spec, memories.index_stats(p)) for p, spec in sorted(memories.indexes().items())]
        # counts are the store's: flush what the buffer holds first, so they are exact
        return _after_flush_if(ctx, memories.index_pending() or memories.pending(""), run)
    raise CommandError("MEM.INDEX takes CREATE prefix DIMS n [DISTANCE cosine|ip|l2] [FIELDS json], LIST, "
                       "or DROP prefix")
