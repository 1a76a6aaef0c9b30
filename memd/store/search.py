"""The MEM.SEARCH planner over SQLite: which plan answers a search, on a given read connection.

Functions of a connection and of the ranking function's name (``bm25``, or ``memd_bm25``
from memd._sqlite), so that they run on the event loop's reader or on a pooled
connection in a worker thread alike. The statements are built by the FILTER compiler
(filters.py) and narrowed by FTS tokens (tokens.py).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from memd.engine.memtable import under
from memd.errors import QueryError
from memd.store.base import Cond, Scope, SearchRow
from memd.store.filters import UNDER, cond_sql, scope_sql, under_params
from memd.store.tokens import filter_match, prefix_token



class VectorSearch(Protocol):
    """What a vector search needs of an in-memory index (memd.store.vectors.VectorIndex)."""

    def search(self, query: Any, k: int, *, prefix: str = "", now_ms: int,
               allowed: Collection[tuple[str, str]] | None = None,
               readable: Callable[[str], bool] | None = None) -> list[tuple[str, str, float]]: ...


RRF_K = 60  # reciprocal rank fusion's constant (the value of the original paper; damps the top ranks)
RRF_DEPTH = 100  # a hybrid search fuses the best max(RRF_DEPTH, offset + limit) of each ranking
SEARCH_MAX_CANDIDATES = 20_000  # beyond this a second try costs more than ranking and joining every match
RECENT_FIRST_BUDGET_SECONDS = 0.004
_COLUMNS = "i.ns, i.key, i.value, i.version, i.created_at, i.updated_at, i.expires_at, i.ttl"  # SearchRow[:8]
# A SearchRow's score column; what the candidates query adds after it: the worst candidate's score, their count
_SCORE, _WORST, _CANDIDATES = 8, 9, 10




def _recent_first(reader: sqlite3.Connection, sql: str, params: list[Any]) -> list[Any] | None:
    """Try a no-query search under a prefix by walking the recency index; None if it takes too long.

    Two plans, each bad where the other is good: walking ``updated_at``
    newest first stops after LIMIT matches (fast when matches are common,
    slow when they are rare), while reading the whole prefix by key and
    sorting costs the prefix's size every time. ``+i.ns`` steers SQLite to
    the first; a progress handler gives up on it after a few milliseconds
    and the caller runs the second. Worst case: the budget plus the second.
    """
    deadline = time.perf_counter() + RECENT_FIRST_BUDGET_SECONDS
    reader.set_progress_handler(lambda: time.perf_counter() > deadline, 2000)
    try:
        return reader.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupt" not in str(exc):
            raise
        return None
    finally:
        reader.set_progress_handler(None, 0)


def _conditions(prefix: str, conds: list[Cond], now_ms: int, scope: Scope
                ) -> tuple[list[str], list[Any], list[str], str | None]:
    """A search's WHERE terms over ``mem_items AS i`` and their parameters, and its FTS5 narrowing.

    The prefix's token and the equality filters' tokens narrow the match inside FTS5; the
    SQL conditions stay the judge (a query like 'x) OR (y' could widen the MATCH, never the result).
    """
    params: list[Any] = [now_ms]
    where = ["i.value IS NOT NULL", "(i.expires_at IS NULL OR i.expires_at > ?)"]
    if prefix:
        where.append(UNDER)
        params += under_params(prefix)
    if scope:
        sql, sparams = scope_sql(scope)
        where.append(sql)
        params += sparams
    for cond in conds:
        sql, cparams = cond_sql(cond)
        where.append(sql)
        params += cparams
    narrow = [f"ns : {prefix_token(prefix)}"] if prefix else []
    match = filter_match(conds)
    if match:
        narrow.append(match)
    return where, params, narrow, match


def search_mem(reader: sqlite3.Connection, rank: str, prefix: str, query: str | None, conds: list[Cond],
               limit: int, offset: int, now_ms: int, scope: Scope = ()) -> list[SearchRow]:
    """Live memories under ``prefix`` matching the FTS5 ``query`` and ``conds``, ranked.

    Rows: (ns, key, value, version, created_at, updated_at, expires_at, ttl, score); the
    score is BM25 turned positive (higher is better), None without a query. ``scope``
    leaves out what the caller may not read. Raises :class:`QueryError` when FTS5
    cannot parse ``query``.
    """
    where, params, narrow, match = _conditions(prefix, conds, now_ms, scope)
    if query is None:
        order = "ORDER BY i.updated_at DESC, i.ns, i.key LIMIT ? OFFSET ?"
        sql = (f"SELECT {_COLUMNS}, NULL "
               f"FROM mem_items AS i WHERE {' AND '.join(where)} {order}")
        params += [limit, offset]
        if prefix or match:
            recent = _recent_first(reader, sql.replace(UNDER, UNDER.replace("i.ns", "+i.ns"), 1), params)
            if recent is not None:
                return recent
        if match:  # the walk found few matches: FTS5 lists them (0.4% of 100,000: 1 ms)
            sql = (f"SELECT {_COLUMNS}, NULL FROM mem_fts JOIN mem_items AS i ON i.rowid = mem_fts.rowid "
                   f"WHERE mem_fts MATCH ? AND {' AND '.join(where)} {order}")
            params.insert(0, " AND ".join(narrow))
        return _run_search(reader, sql, params, query)
    params.insert(0, " AND ".join([*narrow, f"body : ({query})"]))
    params += [limit, offset]
    # Without a FILTER or access rules nearly every match is live, so a few extra candidates do;
    # with them, enough that a filter keeping one memory in eight usually fills the page.
    # A second try sizes the candidates from the first one's yield (a filter keeping 1 in 60: ~900
    # candidates, not all 27,000 matches); a filter that kept none goes straight to the full plan.
    need = limit + offset
    top = 8 * need + 32 if conds or scope else 2 * need + 16
    for _ in range(2):
        rows, kept = _ranked_from_top(reader, rank, where, params, need, top, query)
        if rows is not None:
            return rows[offset:]
        if not kept or top > SEARCH_MAX_CANDIDATES:
            break
        top = math.ceil(need * top / kept * 3) + 32  # 3x: a yield of 1 or 2 is a rough estimate
    sql = (f"SELECT {_COLUMNS}, -f.s "
           f"FROM ({_ranked_matches(rank)}) AS f "
           f"JOIN mem_items AS i ON i.rowid = f.r WHERE {' AND '.join(where)} "
           "ORDER BY f.s, i.ns, i.key LIMIT ? OFFSET ?")
    return _run_search(reader, sql, params, query)


def _ranked_from_top(reader: sqlite3.Connection, rank: str, where: list[str], params: list[Any], need: int,
                     top: int, query: str) -> tuple[list[SearchRow] | None, int]:
    """The first ``need`` ranked rows, joining only FTS5's ``top`` best matches to ``mem_items``.

    Returns (rows, candidates kept); rows is None when the candidates cannot prove the answer.

    Joining every match to its ~1 KB row to check it (live, in scope, FILTER) cost more than
    ranking it: a word in 27% of 100,000 memories, 17 ms ranked, 64 ms ranked and joined.
    The best ``top`` suffice when the last row kept ranks strictly above the worst candidate:
    every match outside the candidates ranks at or below that one, so none can come before
    or tie with a row kept. Otherwise the caller ranks and joins everything.
    """
    sql = (f"WITH f AS MATERIALIZED ({_ranked_matches(rank)} ORDER BY s LIMIT {top}) "
           f"SELECT {_COLUMNS}, -f.s, "
           f"(SELECT max(s) FROM f), (SELECT count(*) FROM f) "
           f"FROM f JOIN mem_items AS i ON i.rowid = f.r WHERE {' AND '.join(where)} "
           "ORDER BY f.s, i.ns, i.key LIMIT ?")
    rows = _run_search(reader, sql, [*params[:-2], need], query)
    if not rows:
        return None, 0  # no match at all, or none kept: the full plan settles it
    worst, candidates = rows[0][_WORST], rows[0][_CANDIDATES]
    if candidates < top or (len(rows) == need and -rows[-1][_SCORE] < worst):
        return [row[:_SCORE + 1] for row in rows], len(rows)
    return None, len(rows)


def _ranked_matches(rank: str) -> str:
    """SQL: every FTS5 match as (r: rowid, s: BM25, lower is better), the body column weighted alone."""
    return f"SELECT rowid AS r, {rank}(mem_fts, 1, 0, 0) AS s FROM mem_fts WHERE mem_fts MATCH ?"


def _run_search(reader: sqlite3.Connection, sql: str, params: list[Any], query: str | None) -> list[Any]:
    try:
        return reader.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        # the statement is ours; only the query text can make it fail to prepare or run,
        # short of a broken database (which every other read reports too)
        if query is not None and not any(w in str(exc) for w in ("disk", "locked", "corrupt", "memory")):
            raise QueryError(str(exc)) from None
        raise


def matching(reader: sqlite3.Connection, prefix: str, conds: list[Cond], now_ms: int, scope: Scope = ()
             ) -> set[tuple[str, str]]:
    """(ns, key) of every live memory under ``prefix`` that ``conds`` and ``scope`` let through.

    A vector search's FILTER: its candidates, decided before the nearest are cut to k.
    Equality conditions find their memories through FTS5 tokens (1% of 100,000: ~1 ms).
    """
    where, params, narrow, match = _conditions(prefix, conds, now_ms, scope)
    if match:
        sql = (f"SELECT i.ns, i.key FROM mem_fts JOIN mem_items AS i ON i.rowid = mem_fts.rowid "
               f"WHERE mem_fts MATCH ? AND {' AND '.join(where)}")
        params.insert(0, " AND ".join(narrow))
    else:
        sql = f"SELECT i.ns, i.key FROM mem_items AS i WHERE {' AND '.join(where)}"
    return set(reader.execute(sql, params).fetchall())


def rows_of(reader: sqlite3.Connection, hits: list[tuple[str, str, float]], now_ms: int) -> list[SearchRow]:
    """The live rows of scored hits, in the hits' order (a hit a flush removed meanwhile is left out)."""
    rows: list[SearchRow] = []
    for ns, key, score in hits:
        row = reader.execute(f"SELECT {_COLUMNS.replace('i.', '')} FROM mem_items WHERE ns = ? AND key = ?",
                             (ns, key)).fetchone()
        if row is not None and row[2] is not None and (row[6] is None or row[6] > now_ms):
            rows.append((*row, score))
    return rows


def fuse(text: list[tuple[str, str]], vector: list[tuple[str, str]]) -> list[tuple[str, str, float]]:
    """Reciprocal rank fusion of a BM25 ranking and a vector ranking, best first.

    ``score = 1/(RRF_K + rank_text) + 1/(RRF_K + rank_vector)``, ranks from 1, a memory
    absent from one list getting no term from it. Ranks, not scores: BM25 and a cosine
    similarity are on scales that cannot be added, and RRF needs no tuning per corpus.
    Ties go to the better text rank, then namespace and key.
    """
    scores: dict[tuple[str, str], float] = {}
    text_rank = {ident: r for r, ident in enumerate(text, 1)}
    for ident, r in text_rank.items():
        scores[ident] = 1.0 / (RRF_K + r)
    for r, ident in enumerate(vector, 1):
        scores[ident] = scores.get(ident, 0.0) + 1.0 / (RRF_K + r)
    never = len(text) + 1
    order = sorted(scores, key=lambda i: (-scores[i], text_rank.get(i, never), i))
    return [(*ident, scores[ident]) for ident in order]


def vector_search(reader: sqlite3.Connection, rank: str, index: VectorSearch, vector: Any, prefix: str,
                  query: str | None, conds: list[Cond], limit: int, offset: int, now_ms: int, scope: Scope = ()
                  ) -> list[SearchRow]:
    """KNN (``query`` None) or hybrid search: FILTER, liveness and scope decide the candidates
    *before* the nearest are cut to ``offset + limit``, so a filtered search is never short."""
    need = limit + offset
    allowed = matching(reader, prefix, conds, now_ms, scope) if conds else None
    readable = _readable_in(scope) if scope else None
    if query is None:
        hits = index.search(vector, need, prefix=prefix, now_ms=now_ms, allowed=allowed, readable=readable)
        return rows_of(reader, hits[offset:], now_ms)
    depth = max(RRF_DEPTH, need)
    text = search_mem(reader, rank, prefix, query, conds, depth, 0, now_ms, scope)
    near = index.search(vector, depth, prefix=prefix, now_ms=now_ms, allowed=allowed, readable=readable)
    fused = fuse([(row[0], row[1]) for row in text], [(ns, key) for ns, key, _ in near])
    return rows_of(reader, fused[offset:need], now_ms)


def _readable_in(scope: Scope) -> Callable[[str], bool]:
    def readable(ns: str) -> bool:
        return next((ok for prefix, ok in scope if under(ns, prefix)), True)
    return readable


def mem_namespaces(reader: sqlite3.Connection, prefix: str, now_ms: int) -> list[str]:
    """Distinct namespaces under ``prefix`` ("" = all) holding at least one live memory, sorted."""
    live = "i.value IS NOT NULL AND (i.expires_at IS NULL OR i.expires_at > ?)"
    if prefix:
        cur = reader.execute(
            f"SELECT DISTINCT i.ns FROM mem_items AS i WHERE {UNDER} AND {live} ORDER BY i.ns",
            (*under_params(prefix), now_ms))
    else:
        cur = reader.execute(f"SELECT DISTINCT i.ns FROM mem_items AS i WHERE {live} ORDER BY i.ns", (now_ms,))
    return [row[0] for row in cur]
