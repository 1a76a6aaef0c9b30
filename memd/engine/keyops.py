"""Whole-key operations: RENAME, COPY, RANDOMKEY, TOUCH, SORT's reads and STORE, OBJECT's answers.

Mixed into :class:`memd.engine.keyspace.Keyspace`. Every write is one
``engine.apply`` (one WAL record) made of the existing ops:

- RENAME / COPY of a string is an ``OP_SET`` of the value with the source's
  expiry; of a collection, an ``OP_UPDATE`` with ``create`` set carrying the
  source's full metadata and *every element*, then (RENAME) an ``OP_DEL`` of
  the source. The copy is therefore O(n) in the collection's size: reading
  the elements (merged across the buffer and SQLite), the WAL record, the
  buffer and the next flush. A cheaper exact scheme would need a new op that
  the store applies as ``UPDATE elems SET key = ?`` and reads that follow a
  rename chain across the buffer layers; the O(n) copy keeps the op set, the
  replay and the flush unchanged, and agents rename small keys (a
  rename-into-place of a freshly built key). A list keeps its positions and
  bounds, so the copy is exact, LTRIMmed-away positions excluded.
- SORT ... STORE writes the result list in one ``OP_UPDATE`` (or an
  ``OP_DEL`` when it is empty), which drops the destination's TTL as Redis's
  ``setKey`` does.

Access times (OBJECT IDLETIME): a buffered key's is its entry's
(``Entry.atime``: set by the write, from the engine clock read once per WAL
record, and by every read since), so writes cost nothing more; a key read
from SQLite is recorded in ``Keyspace.access``, a plain dict of at most
:data:`ACCESS_MAX` keys, where a flush also carries the access times of the
entries it writes (on the loop, in steps). Past the cap, the :data:`FORGET_STEP`
inserted first are forgotten and ``access_floor`` moves to now: a key absent from the
map was last touched before the floor, so its idle time is reported as the
time since the floor (a lower bound; exact for every key touched since).
After a restart every key counts from the start, as Redis's keys do after
loading a snapshot. Commands that Redis runs with ``LOOKUP_NOTOUCH`` (TYPE, EXISTS,
TTL, OBJECT, SCAN, KEYS, RANDOMKEY) read through :meth:`Keyspace.peek`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from memd.engine.collections import M_COUNT, M_EXPIRES_AT, M_HI, M_LO, M_TYPE, Meta
from memd.engine.records import (
    OP_DEL, OP_SELECT, OP_SET, OP_UPDATE, T_HASH, T_LIST, T_NONE, T_SET, T_STREAM, T_STRING, T_ZSET, Op,
)
from memd.engine.memtable import Entry
from memd.errors import WrongTypeError
from memd.int64 import parse_int64
from memd.store.base import list_sub

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

ACCESS_MAX = 100_000  # keys whose last access time is remembered (about 10 MB at most)
CARRY_STEP = 4096  # access times carried over from a flushed layer in one step
FORGET_STEP = 4096  # access times forgotten at once past ACCESS_MAX
RANDOM_TRIES = 100  # random picks before RANDOMKEY walks the keyspace for a live key (as dbRandomKey's tries)

# Redis 7.0's default encoding limits (redis.conf): below them a small encoding, above a big one
_HASH_LISTPACK_ENTRIES = 512  # hash-max-listpack-entries
_ZSET_LISTPACK_ENTRIES = 128  # zset-max-listpack-entries
_LISTPACK_VALUE = 64  # hash-max-listpack-value, zset-max-listpack-value
_INTSET_ENTRIES = 512  # set-max-intset-entries
_EMBSTR_MAX = 44  # OBJ_ENCODING_EMBSTR_SIZE_LIMIT
_SHARED_INTEGERS = 10_000  # OBJ_SHARED_INTEGERS: 0..9999 are shared objects
SHARED_REFCOUNT = 2_147_483_647  # OBJ_SHARED_REFCOUNT (INT_MAX), what OBJECT REFCOUNT shows for them


def string_is_int(value: bytes) -> bool:
    """Whether Redis keeps this string as an integer (``tryObjectEncoding``: string2l, 20 bytes at most)."""
    return len(value) <= 20 and parse_int64(value) is not None


class KeyOpsMixin:
    """RENAME, COPY, RANDOMKEY, TOUCH, OBJECT and SORT's keyspace side."""

    # ---- access times -------------------------------------------------------------------

    def touch(self: Keyspace, keys: list[bytes]) -> int:
        """TOUCH: record an access to each live key; how many were live."""
        return sum(1 for k in keys if self.meta(k) is not None)

    def _forget_access(self: Keyspace) -> None:
        """Drop the :data:`FORGET_STEP` keys of the access map inserted first; they read as 'before the floor'.

        A step, not half the map at once: dropping 50,000 keys took 6-27 ms on the loop, every 50,000
        reads of stored keys (and after each flush, whose access times overfill the map).
        """
        access = self.access
        for key in list(itertools.islice(access, FORGET_STEP)):
            del access[key]
        self.access_floor = self.engine.clock()

    def idle_seconds(self: Keyspace, key: bytes) -> int:
        """Seconds since the last access to ``key`` (see the module docstring for the approximation).

        Counted as Redis's LRU clock counts, in whole seconds of the clock: an
        access at 10.9 s read at 11.1 s is 1 second old.
        """
        for layer in self._layers():
            e = layer.entries.get(key)
            if e is not None:
                last = e.atime
                break
        else:
            last = self.access.get(key, self.access_floor)
        return max(0, int(self.engine.clock()) - int(last))

    def carry_access_times(self: Keyspace, entries: dict[bytes, Entry]) -> Iterator[None]:
        """A flushed buffer layer's access times into the map (its entries are about to go).

        The ACCESS_MAX entries written or read last, in steps for the event loop (memd.steps),
        gathered first and put in with one ``dict.update``.
        """
        recent: dict[bytes, int] = {}
        last = itertools.islice(reversed(entries.items()), ACCESS_MAX)
        while step := list(itertools.islice(last, CARRY_STEP)):
            recent.update((k, e.atime) for k, e in step if e.type != T_NONE)
            yield
        self.access.update(recent)
        while len(self.access) > ACCESS_MAX:  # back under the cap a step at a time, not at the next reads
            self._forget_access()
            yield

    # ---- copying a key ------------------------------------------------------------------

    def _copy_ops(self: Keyspace, src: bytes, dst: bytes, m: Meta) -> list[Op]:
        """Ops that make ``dst`` an exact copy of live ``src`` (value, elements, expiry). O(n)."""
        type_, exp = m[M_TYPE], m[M_EXPIRES_AT]
        if type_ == T_STRING:
            return [(OP_SET, dst, self._string_value(src), exp)]
        if type_ == T_LIST:
            lo, hi = m[M_LO], m[M_HI]
            elems = self.elems(src, list_sub(lo), list_sub(hi))
        else:
            lo = hi = 0
            elems = self.elems(src)
        return [(OP_UPDATE, dst, type_, True, exp, m[M_COUNT], lo, hi, list(elems.items()))]

    def rename(self: Keyspace, src: bytes, dst: bytes, *, nx: bool = False) -> bool | None:
        """RENAME / RENAMENX: None when ``src`` does not exist, False when NX found ``dst``."""
        m = self.meta(src)
        if m is None:
            return None
        if src == dst:
            return not nx
        exists = self.meta(dst) is not None
        if nx and exists:
            return False
        self._apply([*self._copy_ops(src, dst, m), (OP_DEL, src)])
        return True

    def copy(self: Keyspace, src: bytes, dst: bytes, *, replace: bool = False, target: Keyspace | None = None
             ) -> bool:
        """COPY (into ``target``'s database with DB): False when ``src`` is missing or ``dst`` exists without
        REPLACE."""
        to = self if target is None else target
        m = self.meta(src)
        if m is None:
            return False
        if to.meta(dst) is not None and not replace:
            return False
        self.engine.apply([(OP_SELECT, to.db), *self._copy_ops(src, dst, m)])
        return True

    def move(self: Keyspace, key: bytes, target: Keyspace) -> bool:
        """MOVE to ``target``'s database, expiry and all: False when ``key`` is missing here or exists there."""
        m = self.meta(key)
        if m is None or target.meta(key) is not None:
            return False
        self.engine.apply([(OP_SELECT, target.db), *self._copy_ops(key, key, m), (OP_SELECT, self.db), (OP_DEL, key)])
        return True

    # ---- RANDOMKEY ----------------------------------------------------------------------

    def random_key(self: Keyspace, rng: random.Random) -> bytes | None:
        """A live key chosen at random; None only when no key is live.

        A pick is a buffered key (uniform over the buffer layers' keys) or,
        half the time when both hold keys, one of SQLite's (the store's
        :meth:`~memd.store.base.Store.random_key`: every key can come, not
        uniformly). A pick that is not live (deleted in a newer layer,
        expired) is retried, as Redis retries expired picks; after
        :data:`RANDOM_TRIES` the keyspace is walked in key order for live
        keys, so a keyspace of dead keys answers nil exactly.
        """
        layers = self._layers()
        buffered: list[list[bytes]] = []
        store_too = True
        for layer in layers:
            buffered.append(layer.sorted_keys())
            if layer.flushall:
                store_too = False
                break
        n_buffered = sum(len(keys) for keys in buffered)
        for _ in range(RANDOM_TRIES):
            key: bytes | None = None
            if n_buffered and (not store_too or rng.random() < 0.5):
                i = rng.randrange(n_buffered)
                for keys in buffered:
                    if i < len(keys):
                        key = keys[i]
                        break
                    i -= len(keys)
            elif store_too:
                key = self.engine.store.random_key(self.db, rng)
                if key is None:
                    store_too = False
                    if not n_buffered:
                        return None
                    continue
            else:
                return None
            if key is not None and self.peek(key) is not None:
                return key
        after: bytes | None = None
        while True:
            live, after = self.scan(after, 1000)
            if live:
                return rng.choice(live)
            if after is None:
                return None

    # ---- OBJECT -------------------------------------------------------------------------

    def encoding(self: Keyspace, key: bytes, m: Meta) -> str:
        """The encoding Redis 7.0 would most likely use for this value, from its current contents.

        Redis converts a small encoding to a big one as a value grows and never
        back; this answers from the contents now, so a collection that grew
        past a limit and shrank again reads as the small encoding here.
        """
        type_ = m[M_TYPE]
        if type_ == T_STRING:
            value = self._string_value(key)
            if string_is_int(value):
                return "int"
            return "embstr" if len(value) <= _EMBSTR_MAX else "raw"
        if type_ == T_LIST:
            return "quicklist"  # 7.0 keeps every list as a quicklist
        if type_ == T_STREAM:
            return "stream"
        count = m[M_COUNT]
        if type_ == T_SET:
            if count > _INTSET_ENTRIES:
                return "hashtable"
            return "intset" if all(parse_int64(x) is not None for x in self.elems(key)) else "hashtable"
        big = "hashtable" if type_ == T_HASH else "skiplist"
        if count > (_HASH_LISTPACK_ENTRIES if type_ == T_HASH else _ZSET_LISTPACK_ENTRIES):
            return big
        items = self.elems(key).items()
        if type_ == T_HASH:
            small = all(len(f) <= _LISTPACK_VALUE and len(v) <= _LISTPACK_VALUE for f, v in items)
        else:
            small = all(len(member) <= _LISTPACK_VALUE for member, _ in items)
        return "listpack" if small else big

    def refcount(self: Keyspace, key: bytes, m: Meta) -> int:
        """1, except Redis's shared integers 0..9999, whose count reads as INT_MAX."""
        if m[M_TYPE] == T_STRING:
            value = self._string_value(key)
            if string_is_int(value) and 0 <= int(value) < _SHARED_INTEGERS:
                return SHARED_REFCOUNT
        return 1

    # ---- SORT ---------------------------------------------------------------------------

    def sort_source(self: Keyspace, key: bytes) -> tuple[int, list[bytes]]:
        """SORT's input: (type, elements in the value's own order); an empty list for a missing key.

        Lists in list order, sorted sets by score then member, sets in byte
        order (Redis's own set order is its hash table's, i.e. unspecified).
        Raises WRONGTYPE for strings and hashes.
        """
        m = self.meta(key)
        if m is None:
            return T_LIST, []
        type_ = m[M_TYPE]
        if type_ == T_LIST:
            return T_LIST, self.lrange(key, 0, -1)
        if type_ == T_SET:
            return T_SET, sorted(self.elems(key))
        if type_ == T_ZSET:
            return T_ZSET, [member for member, _ in self.zitems(key)]
        raise WrongTypeError()

    def string_or_none(self: Keyspace, key: bytes) -> bytes | None:
        """A string key's value; None when missing or of another type (SORT's BY/GET never fail on type)."""
        m = self.meta(key)
        if m is None or m[M_TYPE] != T_STRING:
            return None
        return self._string_value(key)

    def hash_field_or_none(self: Keyspace, key: bytes, field: bytes) -> bytes | None:
        """A hash field's value; None when the key is missing, not a hash, or lacks the field."""
        m = self.meta(key)
        if m is None or m[M_TYPE] != T_HASH:
            return None
        value: Any = self.elem(key, field)
        return value  # type: ignore[no-any-return]

    def store_list(self: Keyspace, dst: bytes, values: list[bytes]) -> None:
        """SORT ... STORE: ``dst`` becomes this list (no TTL), or is deleted when it is empty."""
        exists = self.meta(dst) is not None  # (Redis's setKey looks the key up for writing: an access)
        if values:
            n = len(values)
            changes: list[tuple[bytes, Any]] = [(list_sub(i), v) for i, v in enumerate(values)]
            self._apply([(OP_UPDATE, dst, T_LIST, True, None, n, 0, n, changes)])
        elif exists:
            self._apply([(OP_DEL, dst)])


__all__ = ["ACCESS_MAX", "FORGET_STEP", "SHARED_REFCOUNT", "KeyOpsMixin", "string_is_int"]
