"""Typed, synchronous reads and writes over the layered store.

A read merges, newest first: the active memtable, the frozen one, SQLite
(see :mod:`memd.engine.memtable` for what an entry means). A write computes
its *effect* with such reads and hands the engine one op list, which is
logged and applied before anything else can run: every method here is one
atomic step. Redis semantics (types, expiry, empty collections vanish) live
here; argument parsing and reply formatting live in ``memd.commands``.

Times are absolute milliseconds since the epoch from the engine's clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from memd.engine.collections import M_COUNT, M_EXPIRES_AT, M_HI, M_LO, M_TYPE, CollectionsMixin, Meta
from memd.engine.elemscan import ElemScanMixin
from memd.engine.keyops import ACCESS_MAX, KeyOpsMixin
from memd.engine.lists import ListsMixin
from memd.engine.randpick import RandomPickMixin
from memd.engine.sets import SetsMixin
from memd.engine.memtable import DELETED, DbTable
from memd.engine.strings import StringsMixin
from memd.engine.streamgroups import StreamGroupsMixin
from memd.engine.streams import StreamsMixin
from memd.engine.zsets import ZsetsMixin
from memd.engine.records import (
    OP_DEL,
    OP_FLUSHALL,
    OP_FLUSHDB,
    OP_SELECT,
    OP_SET,
    OP_UPDATE,
    T_NONE,
    T_STRING,
    TYPE_NAMES,
    Op,
)
from memd.store.base import KeyRow, list_sub
from memd.errors import CommandError, WrongTypeError
from memd.int64 import fits_int64, parse_int64

if TYPE_CHECKING:
    from memd.engine.engine import Engine

_MISSING: Any = object()


class Keyspace(CollectionsMixin, StringsMixin, ListsMixin, SetsMixin, ElemScanMixin, RandomPickMixin, KeyOpsMixin,
               ZsetsMixin, StreamsMixin, StreamGroupsMixin):
    """The keyspace as Redis commands see it (strings, keys; collections, partial string rewrites and
    whole-key ops in the mixins)."""

    def __init__(self, engine: Engine, db: int = 0) -> None:
        self.engine = engine
        self.db = db  # the physical database (engine.keyspace_of maps Redis's numbers to these)
        if db:
            select = (OP_SELECT, db)

            def apply(ops: list[Op]) -> None:
                engine.apply([select, *ops])
            self._apply = apply
        else:
            self._apply = engine.apply  # database 0's ops need no OP_SELECT: a plain call, no extra frame
        # last access per key, engine-clock seconds (OBJECT IDLETIME; bounded: see memd.engine.keyops)
        self.access: dict[bytes, float] = {}
        self.access_floor = engine.clock()
        self._clock = engine.clock
        # the engine's clock in milliseconds (Engine.now_ms): its bound method itself, not a method
        # calling it, since every read that looks at an expiry asks (one Python frame less each)
        self.now_ms: Callable[[], int] = engine.now_ms

    # ---- primitives --------------------------------------------------------------

    def _layers(self) -> list[DbTable]:
        return self.engine.db_layers[self.db]

    def meta(self, key: bytes) -> Meta | None:
        """The key's metadata if it exists and has not expired; records an access to ``key``.

        A buffered key's access time is its entry's (``Entry.atime``, which its
        write set); a key read from SQLite goes into the access map (see
        :mod:`memd.engine.keyops`). A missing key records nothing: a command
        that then creates it (INCR, HSET...) writes an entry that carries its
        time. :meth:`peek`'s body is repeated here: this is every read's path,
        and a second call costs ~0.1 µs of a buffered GET's ~1 µs.
        """
        for layer in self.engine.db_layers[self.db]:  # (_layers inlined: every read's path)
            e = layer.entries.get(key)
            if e is not None:
                if e.type == T_NONE or (e.expires_at is not None and e.expires_at <= self.now_ms()):
                    return None
                e.atime = self._clock()
                return (e.type, e.expires_at, e.count, e.lo, e.hi)
            if layer.flushall:
                return None
        row = self._live_row(key)
        if row is None:
            return None
        self._accessed(key)
        return (row[0], row[2], row[3], row[4], row[5])

    def _accessed(self, key: bytes) -> None:
        """Record an access to a key read from SQLite (the map is bounded: see memd.engine.keyops)."""
        access = self.access
        access[key] = self._clock()
        if len(access) > ACCESS_MAX:
            self._forget_access()

    def peek(self, key: bytes) -> Meta | None:
        """:meth:`meta` without recording an access (Redis's LOOKUP_NOTOUCH: TYPE, TTL, SCAN...)."""
        for layer in self._layers():
            e = layer.entries.get(key)
            if e is not None:
                if e.type == T_NONE or (e.expires_at is not None and e.expires_at <= self.now_ms()):
                    return None
                return (e.type, e.expires_at, e.count, e.lo, e.hi)
            if layer.flushall:
                return None
        row = self._live_row(key)
        return None if row is None else (row[0], row[2], row[3], row[4], row[5])

    def _live_row(self, key: bytes) -> KeyRow | None:
        """SQLite's row for ``key`` unless it has expired (for a key no buffer layer has)."""
        row = self.engine.store.get_key(self.db, key)
        if row is None or (row[2] is not None and row[2] <= self.now_ms()):
            return None
        return row

    def typed_meta(self, key: bytes, type_: int) -> Meta | None:
        m = self.meta(key)
        if m is not None and m[M_TYPE] != type_:
            raise WrongTypeError()
        return m

    def _string_value(self, key: bytes) -> bytes:
        """Value of a string key known to be live (an expiry-only entry defers to older layers)."""
        for layer in self._layers():
            e = layer.entries.get(key)
            if e is not None and e.value is not None:
                return e.value
        row = self.engine.store.get_key(self.db, key)
        assert row is not None and row[1] is not None, f"string {key!r} has no value in any layer"
        return row[1]

    def elem(self, key: bytes, sub: bytes) -> Any:
        """One element of a collection (value, or score for zsets), None if absent."""
        for layer in self._layers():
            e = layer.entries.get(key)
            if e is not None:
                if e.elems is not None:
                    v = e.elems.get(sub, _MISSING)
                    if v is not _MISSING:
                        return None if v is DELETED else v
                if e.reset:
                    return None
            if layer.flushall:
                return None
        return self.engine.store.get_elem(self.db, key, sub)

    def elems(self, key: bytes, sub_from: bytes | None = None, sub_to: bytes | None = None) -> dict[bytes, Any]:
        """Every element of a collection (or those in ``[sub_from, sub_to)``), merged."""
        overlays = []
        bottom = False
        for layer in self._layers():
            e = layer.entries.get(key)
            if e is not None:
                if e.elems:
                    overlays.append(e.elems)
                if e.reset:
                    bottom = True
                    break
            if layer.flushall:
                bottom = True
                break
        result: dict[bytes, Any] = {} if bottom else dict(self.engine.store.iter_elems(self.db, key, sub_from, sub_to))
        for overlay in reversed(overlays):
            for sub, v in overlay.items():
                if sub_from is not None and not (sub_from <= sub < sub_to):  # type: ignore[operator]
                    continue
                if v is DELETED:
                    result.pop(sub, None)
                else:
                    result[sub] = v
        return result

    def update(self, key: bytes, type_: int, create: bool, exp: int | None, count: int, lo: int, hi: int,
               changes: list[tuple[bytes, Any]]) -> None:
        """Write a collection's new metadata and element changes; an emptied collection is deleted."""
        if count <= 0:
            if not create:
                self._apply([(OP_DEL, key)])
            return
        self._apply([(OP_UPDATE, key, type_, create, exp, count, lo, hi, changes)])

    # ---- keys --------------------------------------------------------------------

    def type_name(self, key: bytes) -> str:
        m = self.peek(key)
        return "none" if m is None else TYPE_NAMES[m[M_TYPE]]

    def exists(self, keys: list[bytes]) -> int:
        return sum(1 for k in keys if self.peek(k) is not None)

    def delete(self, keys: list[bytes]) -> int:
        live = [k for k in dict.fromkeys(keys) if self.peek(k) is not None]
        self._apply([(OP_DEL, k) for k in live])  # one record: a multi-key DEL is atomic too
        return len(live)

    def pttl(self, key: bytes) -> int:
        """-2: no such key; -1: no expiry; else milliseconds left."""
        m = self.peek(key)
        if m is None:
            return -2
        if m[M_EXPIRES_AT] is None:
            return -1
        return max(0, m[M_EXPIRES_AT] - self.now_ms())

    def expire_at(self, key: bytes, when_ms: int | None, *, nx: bool = False, xx: bool = False, gt: bool = False,
                  lt: bool = False) -> bool:
        """Set (or with None remove) an absolute expiry; Redis's NX/XX/GT/LT rules."""
        m = self.meta(key)
        if m is None:
            return False
        cur = m[M_EXPIRES_AT]
        if when_ms is not None:
            if nx and cur is not None or xx and cur is None:
                return False
            # a missing TTL counts as infinite for GT and LT
            if gt and (cur is None or when_ms <= cur) or lt and cur is not None and when_ms >= cur:
                return False
            if when_ms <= self.now_ms():
                self._apply([(OP_DEL, key)])
                return True
        elif cur is None:
            return False
        self._apply([(OP_UPDATE, key, m[M_TYPE], False, when_ms, m[M_COUNT], m[M_LO], m[M_HI], [])])
        return True

    def flushall(self) -> None:
        """FLUSHALL: every database's keys."""
        self._apply([(OP_FLUSHALL,)])

    def flushdb(self) -> None:
        """FLUSHDB: this database's keys."""
        self._apply([(OP_FLUSHDB,)])

    def dbsize(self) -> int:
        """Live keys. O(keys in the buffer) point reads on top of one COUNT."""
        with self.engine.store.snapshot():  # else a flush committing in between counts its keys twice
            return self._dbsize()

    def _dbsize(self) -> int:
        layers = self._layers()
        seen: set[bytes] = set()
        live = 0
        below_reset = any(layer.flushall for layer in layers)
        store = self.engine.store
        now = self.now_ms()
        for layer in layers:
            for key in layer.entries:
                if key in seen:
                    continue
                seen.add(key)
                if self.peek(key) is not None:
                    live += 1
                if not below_reset:
                    row = store.get_key(self.db, key)
                    if row is not None and (row[2] is None or row[2] > now):
                        live -= 1
            if layer.flushall:
                break
        return live if below_reset else live + store.count_live_keys(self.db, now)

    def scan(self, after: bytes | None, count: int) -> tuple[list[bytes], bytes | None]:
        """Live keys in byte order after ``after``, about ``count`` candidates per call.

        Returns (keys, resume point or None when done). Keys are visited in
        sort order, so a key that exists for the whole scan is returned
        exactly once whatever flushes happen in between.
        """
        count = max(1, count)
        layers = self._layers()
        candidates: set[bytes] = set()
        limit: bytes | None = None
        if not any(layer.flushall for layer in layers):
            rows = self.engine.store.scan_keys(self.db, after, count)
            candidates.update(r[0] for r in rows)
            if len(rows) == count:
                limit = rows[-1][0]
        more_in_memory = False
        for layer in layers:
            keys = layer.sorted_keys()
            i = 0 if after is None else bisect.bisect_right(keys, after)
            j = len(keys) if limit is None else bisect.bisect_right(keys, limit)
            if j - i > count:  # keep each call bounded even when the buffer holds many new keys
                j = i + count
                more_in_memory = True
            candidates.update(keys[i:j])
            if layer.flushall:
                break
        ordered = sorted(candidates)
        if more_in_memory or limit is not None:
            ordered = ordered[:count] if limit is None else [k for k in ordered if k <= limit][: max(count, 1)]
        if not ordered:
            return [], None
        done = limit is None and not more_in_memory and len(ordered) == len(candidates)
        live = [k for k in ordered if self.peek(k) is not None]
        return live, (None if done else ordered[-1])

    # ---- strings -----------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """GET (and MGET's, GETRANGE's... read): the string value, None if there is none.

        A buffered key is answered in one pass over the layers: what :meth:`typed_meta`
        then :meth:`_string_value` do (the access time before the type check, as
        :meth:`meta`), without walking the layers two more times; this is the read
        fast path's every call (memd.readrun).
        """
        for layer in self.engine.db_layers[self.db]:
            e = layer.entries.get(key)
            if e is not None:  # buffered: the metadata and the value come from the layers
                if e.type == T_NONE or (e.expires_at is not None and e.expires_at <= self.now_ms()):
                    return None
                e.atime = self._clock()
                if e.type != T_STRING:
                    raise WrongTypeError()
                value = e.value
                return value if value is not None else self._string_value(key)  # an expiry-only entry
            if layer.flushall:
                return None
        # only in SQLite: one read for the type, expiry and value (meta then value would read it twice)
        row = self._live_row(key)
        if row is None:
            return None
        if row[0] != T_STRING:
            raise WrongTypeError()
        self._accessed(key)
        return row[1]

    def set(self, key: bytes, value: bytes, *, expires_at: int | None = None, keepttl: bool = False,
            nx: bool = False, xx: bool = False, get: bool = False) -> tuple[bool, bytes | None]:
        """SET with every option; returns (was set, old value when ``get``)."""
        if not (nx or xx or get or keepttl):
            # a plain SET overwrites whatever was there: no read at all (the hot path)
            self._apply([(OP_SET, key, value, expires_at)])  # (its entry carries the access time)
            return True, None
        m = self.meta(key)
        old = None
        if get and m is not None:
            if m[M_TYPE] != T_STRING:
                raise WrongTypeError()
            old = self._string_value(key)
        if nx and m is not None or xx and m is None:
            return False, old
        if keepttl and m is not None:
            expires_at = m[M_EXPIRES_AT]
        self._apply([(OP_SET, key, value, expires_at)])
        return True, old

    def getdel(self, key: bytes) -> bytes | None:
        value = self.get(key)
        if value is not None:
            self._apply([(OP_DEL, key)])
        return value

    def mset(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._apply([(OP_SET, k, v, None) for k, v in pairs])  # (the entries carry the access time)

    def incrby(self, key: bytes, delta: int) -> int:
        m = self.typed_meta(key, T_STRING)
        cur = 0
        if m is not None:
            cur = parse_int64(self._string_value(key))
            if cur is None:
                raise CommandError("value is not an integer or out of range")
        new = cur + delta
        if not fits_int64(new):
            raise CommandError("increment or decrement would overflow")
        self._apply([(OP_SET, key, str(new).encode(), None if m is None else m[M_EXPIRES_AT])])
        return new


__all__ = ["M_COUNT", "M_EXPIRES_AT", "M_HI", "M_LO", "M_TYPE", "Keyspace", "Meta", "list_sub"]
