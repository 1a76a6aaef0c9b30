"""LCS: the longest common subsequence of two strings (Redis 7.0, ``t_string.c``).

Redis fills the whole dynamic-programming table, ``LCS(i, j)`` for every
prefix pair, then walks back from the end choosing, on a mismatch, the
larger of ``LCS(i-1, j)`` and ``LCS(i, j-1)`` (``j`` on a tie); which common
subsequence it answers, and which match ranges IDX lists, follow from that
walk, so memd walks the same way.

A cell-by-cell table in Python takes 4.3 s for two 2 kB strings, so about
100 s for two 10 kB ones (Redis: a fraction of a second), blocking every
client meanwhile.
The table is computed instead by the bit-parallel algorithm of Allison and
Dix (as revised by Hyyrö, 2004): one row is one Python integer of
``len(b)`` bits, bit ``j`` clear where ``LCS(i, j+1) = LCS(i, j) + 1``, and
the next row comes from a few big-integer operations. ``LCS(i, j)`` is then
``j`` minus the set bits among the row's low ``j`` bits. All rows together
take ``len(a) * len(b) / 8`` bytes, a 32nd of Redis's own table.
"""

from __future__ import annotations

from memd.commands import Context, command
from memd.commands.strings import SYNTAX, ll, string_limit
from memd.errors import CommandError, WrongTypeError


class Table:
    """The rows of the LCS table of ``a`` against ``b`` (or only the last one)."""

    def __init__(self, a: bytes, b: bytes, keep_rows: bool) -> None:
        full = (1 << len(b)) - 1
        matches: dict[int, int] = {}
        for j, ch in enumerate(b):
            matches[ch] = matches.get(ch, 0) | 1 << j
        row = full
        rows = [row]
        for ch in a:
            u = row & matches.get(ch, 0)
            row = ((row + u) | (row - u)) & full
            if keep_rows:
                rows.append(row)
        self.rows = rows
        self.length = len(b) - row.bit_count()

    def at(self, i: int, j: int) -> int:
        """``LCS(a[:i], b[:j])`` (rows kept)."""
        return j - (self.rows[i] & ((1 << j) - 1)).bit_count()


def lcs_walk(a: bytes, b: bytes, table: Table, min_len: int, with_len: bool
             ) -> tuple[bytes, list[list[object]]]:
    """Redis's walk back through the table: the subsequence and the IDX match ranges."""
    alen = len(a)
    idx = table.length
    out = bytearray(idx)
    ranges: list[list[object]] = []
    a_start = alen  # alen: no range open
    a_end = b_start = b_end = 0
    i, j = alen, len(b)
    while i > 0 and j > 0:
        emit = False
        if a[i - 1] == b[j - 1]:
            out[idx - 1] = a[i - 1]
            if a_start == alen:
                a_start = a_end = i - 1
                b_start = b_end = j - 1
            elif a_start == i and b_start == j:  # the range grows backwards
                a_start -= 1
                b_start -= 1
            else:
                emit = True
            if a_start == 0 or b_start == 0:
                emit = True
            idx -= 1
            i -= 1
            j -= 1
        else:
            if table.at(i - 1, j) > table.at(i, j - 1):
                i -= 1
            else:
                j -= 1
            if a_start != alen:
                emit = True
        if emit:
            match_len = a_end - a_start + 1
            if min_len == 0 or match_len >= min_len:
                entry: list[object] = [[a_start, a_end], [b_start, b_end]]
                if with_len:
                    entry.append(match_len)
                ranges.append(entry)
            a_start = alen
    return bytes(out), ranges


@command("lcs", -3)
def lcs(ctx: Context, args: list[bytes]) -> object:
    ks = ctx.keyspace
    values = []
    for key in args[:2]:
        try:
            values.append(ks.get(key) or b"")
        except WrongTypeError:
            raise CommandError("The specified keys must contain string values") from None
    a, b = values
    get_len = get_idx = with_len = False
    min_len = 0
    i = 2
    while i < len(args):
        opt = args[i].lower()
        if opt == b"idx":
            get_idx = True
        elif opt == b"len":
            get_len = True
        elif opt == b"withmatchlen":
            with_len = True
        elif opt == b"minmatchlen" and i + 1 < len(args):
            min_len = max(0, ll(args[i + 1]))
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    if get_len and get_idx:
        raise CommandError("If you want both the length and indexes, please just use IDX.")
    if (len(a) + 1) * (len(b) + 1) * 4 > string_limit(ctx):  # Redis's table of uint32 cells must fit
        raise CommandError("Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
    walk = get_idx or not get_len
    table = Table(a, b, keep_rows=walk)
    if not walk:
        return table.length
    common, ranges = lcs_walk(a, b, table, min_len, with_len)
    if get_idx:
        return {b"matches": ranges, b"len": table.length}
    return common
