"""Set commands beyond membership: SPOP, SRANDMEMBER, SMOVE and the set algebra.

Random picks are uniform and come from :mod:`memd.engine.randpick` (a few
offset walks of the store's index rather than reading the whole set).

SINTER walks the smallest set and asks the others by point reads, as Redis
does. The STORE forms and SMOVE write every key they change in one
``engine.apply`` (one WAL record), so after a crash the destination holds
the whole result or the old value, and SMOVE's member is in exactly one set.
A STORE replaces its destination whatever it held, without its TTL (Redis's
``setKey``), by an OP_UPDATE with ``create`` set, which hides the older state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memd.engine.collections import M_COUNT, M_EXPIRES_AT, Meta
from memd.engine.records import OP_DEL, OP_UPDATE, T_SET, Op

if TYPE_CHECKING:
    from memd.engine.keyspace import Keyspace

_EMPTY = b""


def _set_op(key: bytes, m: Meta | None, count: int, changes: list[tuple[bytes, bytes | None]]) -> Op:
    """The op that leaves ``key`` a set of ``count`` members after ``changes`` (gone when empty)."""
    if count <= 0:
        return (OP_DEL, key)
    return (OP_UPDATE, key, T_SET, m is None, None if m is None else m[M_EXPIRES_AT], count, 0, 0, changes)


class SetsMixin:
    """Set commands that pick at random or combine sets; mixed into :class:`Keyspace`."""

    def _members(self: Keyspace, key: bytes) -> list[bytes]:
        return list(self.elems(key))

    def spop(self: Keyspace, key: bytes, count: int | None) -> list[bytes] | None:
        """SPOP: ``count`` distinct random members removed (one when None); None without the key."""
        m = self.typed_meta(key, T_SET)
        if m is None:
            return None
        if count == 0:
            return []
        picked = self.random_subs(key, m[M_COUNT], 1 if count is None else count, distinct=True)
        self._apply([_set_op(key, m, m[M_COUNT] - len(picked), [(x, None) for x in picked])])
        return picked

    def srandmember(self: Keyspace, key: bytes, count: int | None) -> list[bytes] | None:
        """SRANDMEMBER: distinct members for ``count`` >= 0 (all of them at most), ``-count`` draws
        with repetition for a negative one; None without the key."""
        m = self.typed_meta(key, T_SET)
        if m is None:
            return None
        if count is None:
            count = 1
        return self.random_subs(key, m[M_COUNT], abs(count), distinct=count > 0)

    def smove(self: Keyspace, src: bytes, dst: bytes, member: bytes) -> bool:
        """SMOVE with Redis's checks in Redis's order; True when the member was in ``src``."""
        sm = self.typed_meta(src, T_SET)
        if sm is None:
            return False
        dm = self.typed_meta(dst, T_SET)
        present = self.elem(src, member) is not None
        if src == dst or not present:
            return present
        ops = [_set_op(src, sm, sm[M_COUNT] - 1, [(member, None)])]
        if dm is None or self.elem(dst, member) is None:
            ops.append(_set_op(dst, dm, (0 if dm is None else dm[M_COUNT]) + 1, [(member, _EMPTY)]))
        self._apply(ops)  # one record: the member is in exactly one of the sets after a crash
        return True

    # ---- algebra ---------------------------------------------------------------------

    def _set_metas(self: Keyspace, keys: list[bytes]) -> list[Meta | None]:
        """Every key's metadata; WRONGTYPE if any is not a set (even after a missing one, as Redis)."""
        return [self.typed_meta(k, T_SET) for k in keys]

    def sinter(self: Keyspace, keys: list[bytes], limit: int = 0) -> list[bytes]:
        """Members in every set (at most ``limit`` of them when it is not 0)."""
        metas = self._set_metas(keys)
        if any(m is None for m in metas):
            return []
        order = sorted(range(len(keys)), key=lambda j: metas[j][M_COUNT])  # type: ignore[index]
        first = keys[order[0]]
        others = list(dict.fromkeys(keys[j] for j in order[1:] if keys[j] != first))
        out: list[bytes] = []
        for member in self._members(first):
            if all(self.elem(k, member) is not None for k in others):
                out.append(member)
                if limit and len(out) >= limit:
                    break
        return out

    def sunion(self: Keyspace, keys: list[bytes]) -> list[bytes]:
        metas = self._set_metas(keys)
        out: dict[bytes, None] = {}
        for k, m in zip(keys, metas):
            if m is not None:
                out.update(dict.fromkeys(self._members(k)))
        return list(out)

    def sdiff(self: Keyspace, keys: list[bytes]) -> list[bytes]:
        metas = self._set_metas(keys)
        if metas[0] is None or keys[0] in keys[1:]:
            return []
        others = [k for k, m in zip(keys[1:], metas[1:]) if m is not None]
        return [x for x in self._members(keys[0]) if all(self.elem(k, x) is None for k in others)]

    def sstore(self: Keyspace, dst: bytes, members: list[bytes]) -> int:
        """Make ``dst`` the set of ``members`` (no TTL), replacing whatever it was; deleted when empty."""
        if not members:
            if self.meta(dst) is not None:
                self._apply([(OP_DEL, dst)])
            return 0
        self._apply([(OP_UPDATE, dst, T_SET, True, None, len(members), 0, 0,
                            [(x, _EMPTY) for x in members])])
        return len(members)


__all__ = ["SetsMixin"]
