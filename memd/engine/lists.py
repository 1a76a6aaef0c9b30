"""List writes beyond the ends: LSET, LINSERT, LREM, LPOS, LMOVE / RPOPLPUSH, LMPOP.

A list is a contiguous run of positions ``[lo, hi)`` (see
:mod:`memd.engine.collections`), which keeps pushes and pops at either end
O(1). A write in the middle has to renumber: LINSERT and LREM read the whole
list (they search it anyway, O(n) like Redis's own scan), compute the new
sequence and where it starts, and log only the positions whose value
changes plus the positions that fall out of the new bounds — one OP_UPDATE.
Each picks the cheaper end to anchor: LINSERT shifts the shorter side by
one (a new ``lo - 1`` or ``hi + 1``), LREM closes the gaps towards the end
that moves fewer elements. So the log costs O(min(i, n - i)) elements for
an insert at offset ``i``, and nothing for untouched positions.

LMOVE and RPOPLPUSH write two keys in one ``engine.apply`` (one WAL record:
both or neither after a crash); on one key they rotate it in a single op.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memd.engine.collections import M_COUNT, M_EXPIRES_AT, M_HI, M_LO, Meta
from memd.engine.records import OP_DEL, OP_UPDATE, T_LIST, Op
from memd.errors import CommandError
from memd.store.base import list_sub

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace


def _list_op(key: bytes, m: Meta | None, count: int, lo: int, hi: int, changes: list[tuple[bytes, Any]]) -> Op:
    """The op that leaves ``key`` a list of ``count`` elements in ``[lo, hi)`` (or gone when empty)."""
    if count <= 0:
        return (OP_DEL, key)
    exp = None if m is None else m[M_EXPIRES_AT]
    return (OP_UPDATE, key, T_LIST, m is None, exp, count, lo, hi, changes)


class ListsMixin:
    """List commands that touch the middle or two keys; mixed into :class:`Keyspace`."""

    def list_values(self: Keyspace, key: bytes, m: Meta, a: int = 0, b: int | None = None) -> list[bytes]:
        """The elements at offsets ``[a, b)`` of a live list, in order (all by default)."""
        lo = m[M_LO]
        b = m[M_COUNT] if b is None else b
        if a >= b:
            return []
        found = self.elems(key, list_sub(lo + a), list_sub(lo + b))
        return [found[list_sub(p)] for p in range(lo + a, lo + b)]

    def _relist(self: Keyspace, key: bytes, m: Meta, old: list[bytes], new: list[bytes], new_lo: int) -> None:
        """Replace a list's content ``old`` with ``new`` starting at ``new_lo``: one op with only the
        positions whose value changes and the positions that fall outside the new bounds."""
        lo, hi = m[M_LO], m[M_HI]
        new_hi = new_lo + len(new)
        changes: list[tuple[bytes, Any]] = []
        for p in range(new_lo, new_hi):
            v = new[p - new_lo]
            if not lo <= p < hi or old[p - lo] != v:
                changes.append((list_sub(p), v))
        changes += [(list_sub(p), None) for p in range(lo, hi) if not new_lo <= p < new_hi]
        self._apply([_list_op(key, m, len(new), new_lo, new_hi, changes)])

    def lset(self: Keyspace, key: bytes, index: int, value: bytes) -> None:
        """LSET: one position rewritten, O(1) whatever the list's length."""
        m = self.typed_meta(key, T_LIST)
        if m is None:
            raise CommandError("no such key")
        n = m[M_COUNT]
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise CommandError("index out of range")
        self._apply([_list_op(key, m, n, m[M_LO], m[M_HI], [(list_sub(m[M_LO] + index), value)])])

    def linsert(self: Keyspace, key: bytes, before: bool, pivot: bytes, value: bytes) -> int:
        """LINSERT: the new length, -1 without the pivot, 0 without the key."""
        m = self.typed_meta(key, T_LIST)
        if m is None:
            return 0
        old = self.list_values(key, m)
        try:
            at = old.index(pivot) + (0 if before else 1)
        except ValueError:
            return -1
        new = old[:at] + [value] + old[at:]
        # shift the shorter side: the left part one position down, or the right part one up
        new_lo = m[M_LO] - 1 if at <= len(old) - at else m[M_LO]
        self._relist(key, m, old, new, new_lo)
        return len(new)

    def lrem(self: Keyspace, key: bytes, count: int, value: bytes) -> int:
        """LREM: remove up to ``|count|`` matches (from the tail when negative; all when 0)."""
        m = self.typed_meta(key, T_LIST)
        if m is None:
            return 0
        old = self.list_values(key, m)
        order = range(len(old) - 1, -1, -1) if count < 0 else range(len(old))
        gone: list[int] = []
        for i in order:
            if old[i] == value:
                gone.append(i)
                if count and len(gone) == abs(count):
                    break
        if not gone:
            return 0
        drop = set(gone)
        new = [v for i, v in enumerate(old) if i not in drop]
        first, last = min(gone), max(gone)
        # anchor the end that moves fewer elements: keeping lo rewrites from the first gap to the
        # tail, keeping hi rewrites from the head to the last gap
        keep_lo = len(old) - first <= last + 1
        self._relist(key, m, old, new, m[M_LO] if keep_lo else m[M_LO] + len(gone))
        return len(gone)

    def lpos(self: Keyspace, key: bytes, value: bytes, rank: int, count: int | None, maxlen: int
             ) -> list[int] | None:
        """LPOS's matches (offsets from the head), or None when the key does not exist.

        ``rank`` is never 0; a negative one searches from the tail. ``count``
        None asks for one match, 0 for all. ``maxlen`` 0 compares every element.
        """
        m = self.typed_meta(key, T_LIST)
        if m is None:
            return None
        n = m[M_COUNT]
        scan = n if maxlen == 0 else min(n, maxlen)
        tail = rank < 0
        # only the elements LPOS may compare are read
        values = self.list_values(key, m, n - scan, n) if tail else self.list_values(key, m, 0, scan)
        offsets = range(n - 1, n - 1 - scan, -1) if tail else range(scan)
        skip = abs(rank) - 1
        want = 1 if count is None else count
        out: list[int] = []
        base = n - scan if tail else 0
        for i in offsets:
            if values[i - base] != value:
                continue
            if skip > 0:
                skip -= 1
                continue
            out.append(i)
            if want and len(out) >= want:
                break
        return out

    def lmove(self: Keyspace, src: bytes, dst: bytes, src_left: bool, dst_left: bool) -> bytes | None:
        """LMOVE / RPOPLPUSH: the element moved, None when ``src`` does not exist."""
        sm = self.typed_meta(src, T_LIST)
        if sm is None:
            return None
        same = dst == src
        dm = sm if same else self.typed_meta(dst, T_LIST)
        lo, hi, n = sm[M_LO], sm[M_HI], sm[M_COUNT]
        pos = lo if src_left else hi - 1
        value: bytes = self.elem(src, list_sub(pos))
        if same:
            if src_left == dst_left:  # taken from one end and put back there: rewrite it in place
                self._apply([_list_op(src, sm, n, lo, hi, [(list_sub(pos), value)])])
                return value
            new_pos = hi if src_left else lo - 1
            lo, hi = (lo + 1, hi + 1) if src_left else (lo - 1, hi - 1)
            self._apply([_list_op(src, sm, n, lo, hi, [(list_sub(pos), None), (list_sub(new_pos), value)])])
            return value
        src_lo, src_hi = (lo + 1, hi) if src_left else (lo, hi - 1)
        ops = [_list_op(src, sm, n - 1, src_lo, src_hi, [(list_sub(pos), None)])]
        dlo, dhi, dn = (0, 0, 0) if dm is None else (dm[M_LO], dm[M_HI], dm[M_COUNT])
        if dst_left:
            dlo -= 1
            at = dlo
        else:
            at = dhi
            dhi += 1
        ops.append(_list_op(dst, dm, dn + 1, dlo, dhi, [(list_sub(at), value)]))
        self._apply(ops)  # one record: the element is in exactly one list after a crash
        return value

    def lmpop(self: Keyspace, keys: list[bytes], left: bool, count: int) -> tuple[bytes, list[bytes]] | None:
        """LMPOP: up to ``count`` elements from the first non-empty list, with its name."""
        for key in keys:
            if self.typed_meta(key, T_LIST) is None:
                continue
            popped = self.pop(key, left=left, count=count)
            return key, popped or []
        return None


__all__ = ["ListsMixin"]
