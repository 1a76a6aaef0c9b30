"""MEM.SEARCH against independent Python references: FILTER semantics and ranked pagination.

- Filters: hypothesis draws memories whose top-level fields take tricky values
  (strings around the 64-character ``fields`` bound, quotes, backslashes, control
  and non-ASCII characters, the placeholder text ``[]``; integers around 2^53 and
  beyond int64; reals; booleans; null; containers; missing) and random FILTERs
  (every operator); each search must select exactly what a plain-Python JSONB-like
  evaluation of the filter selects, through every plan: no QUERY (in order), no
  QUERY with the recency walk giving up (FTS5 narrows by equalities), and ranked.
  Hand-picked cases (and -2^63, which once broke the flush) follow.
- Ranking: with a QUERY, every LIMIT/OFFSET window must be the same slice of
  the full ranked list (score desc, then namespace, key), however the engine
  gets there (over-fetching FTS5's best candidates or ranking every match),
  with BM25 ties across window edges and past the candidates, expired and
  deleted memories among the best candidates, prefixes and filters.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from typing import Any
from unittest import mock

import anyio
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from memd.store import search as store_mod
from memd.engine.engine import Engine
from memd.commands.memory import load_json
from memd.engine.memories import MemItem, parse_filter
from memd.errors import CommandError
from memd.store.filters import cond_sql, json_equal
from tests.conftest import FakeClock

# ---- the reference: FILTER semantics in plain Python (docs/memory.md) -------------------------

MISSING = object()
_INT64 = 1 << 63
_RANGE_OPS = {"$gt": lambda x, v: x > v, "$gte": lambda x, v: x >= v,
              "$lt": lambda x, v: x < v, "$lte": lambda x, v: x <= v}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def ref_eq(x: Any, v: Any) -> bool:
    """JSONB-like equality of a field's value ``x`` (or MISSING) with the FILTER value ``v``."""
    if v is None:
        return x is MISSING or x is None  # null also matches a missing field
    return x is not MISSING and json_equal(x, v)


def ref_cond(doc: dict[str, Any], field: str, op: str, v: Any) -> bool:
    x = doc.get(field, MISSING)
    if op == "$eq":
        return ref_eq(x, v)
    if op == "$ne":
        return not ref_eq(x, v)
    if op == "$in":
        return any(ref_eq(x, w) for w in v)
    # ranges: number with number (never a boolean), string with string (code point order)
    if isinstance(v, str):
        return isinstance(x, str) and _RANGE_OPS[op](x, v)
    return _is_number(x) and _RANGE_OPS[op](x, v)


def ref_filter(doc: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Every entry of the FILTER object holds (written from the docs, not from parse_filter)."""
    for field, want in spec.items():
        if isinstance(want, dict) and want and all(k.startswith("$") for k in want):
            if not all(ref_cond(doc, field, op, v) for op, v in want.items()):
                return False
        elif not ref_cond(doc, field, "$eq", want):
            return False
    return True


# ---- value pools ----------------------------------------------------------------------------

LONG64 = "x" * 64  # the longest string ``fields`` keeps
STRINGS = [
    "", "a", "b", "A", "ab", " ", "5", "true", "null", "[]", "[", "{}", '"', "\\", '\\"', '"a":5', '{"a":5}',
    ',"a":5}', ',"a":[]', "\n", "\x01", "\x1f", "\x7f", "é", "e\u0301", "日本", "\U0001F600", "\ufffd",
    LONG64, LONG64 + "x", LONG64 + "y", "x" * 63, "x" * 63 + "é", "é" * 64, "é" * 65, '"' * 64, '"' * 65,
    "\\" * 65, "[]" + "x" * 63,
    "\x00", "a\x00", "a\x00b", "\x00" + "x" * 70,  # NUL: SQLite's JSON functions would cut the string there
]
# Integers: some whose text starts another's (1, 12; 5, 55); around the 2^53 bound of ``fields``;
# up to int64 (SQLite's integers) and a few beyond that doubles hold exactly (SQLite reads them as
# reals). Not -2^63 (see its own test), nor values beyond int64 that doubles round (SQLite's JSON
# reads them inexactly, as it always did).
INTS = [0, 1, -1, 5, -5, 12, -12, 55, 2**53 - 1, 2**53, 2**53 + 1, -(2**53 - 1), -(2**53), -(2**53) - 1,
        2**63 - 1, -(2**63) + 1, 2**63, 10**20, -(10**20)]
REALS = [0.0, -0.0, 5.0, 5.5, -0.5, 100.0, 1e20, 2.0**53, 2.0**63, -(2.0**63), 1e-7, 1.5e300]
CONTAINERS = [[], [1], [1.0], [True], ["a"], [None], {}, {"x": 1}, {"x": 1.0}, {"a": 5}, {"a": "a"},
              {"a": []}, [[1]], {"x": {"y": [1, {"z": None}]}}]
SCALARS = [*STRINGS, *INTS, *REALS, True, False, None]
VALUES = [*SCALARS, *CONTAINERS]
FIELDS = ["a", "b", 'q"x', "é $.[0]"]  # 'q"x' is not a JSON path: the engine reads it another way
NAMESPACES = ["n1", "n1.x", "n2"]
QUERY_WORD = "filler"  # the word every memory a QUERY plan may return holds (others hold "other")


def _valid_operand(v: Any) -> bool:
    return not (_is_number(v) and isinstance(v, int) and not -_INT64 <= v < _INT64)


# FILTER operands stored values never hold: NaN and +/-infinity (what Python's json writes for them)
NONFINITE = [math.inf, -math.inf, math.nan]
FILTER_SCALARS = [v for v in SCALARS if _valid_operand(v)]


@st.composite
def filters(draw: st.DrawFn, seen: dict[str, list[Any]]) -> dict[str, Any]:
    """A valid FILTER of 1-4 conditions on 1-2 fields; operands are often values memories hold in
    that field (so that filters select some memories, not none)."""
    spec: dict[str, Any] = {}
    fields = st.sampled_from([*FIELDS * 3, "zz"])  # "zz": a field no memory has
    for field in draw(st.lists(fields, min_size=1, max_size=1 + (draw(st.integers(0, 3)) == 0), unique=True)):
        held = [v for v in seen.get(field, []) if _valid_operand(v)]
        held_scalars = [v for v in held if not isinstance(v, (dict, list)) and _valid_operand(v)]
        often = [st.sampled_from(held_scalars)] * 3 if held_scalars else []
        scalar = st.one_of(st.sampled_from(FILTER_SCALARS), st.sampled_from(NONFINITE), *often)
        value = st.one_of(scalar, st.sampled_from(CONTAINERS), *([st.sampled_from(held)] * 2 if held else []))
        ranged = scalar.filter(lambda v: isinstance(v, str) or _is_number(v))
        operand = {"$eq": value, "$ne": value, "$in": st.lists(st.one_of(st.none(), scalar), max_size=4),
                   "$gt": ranged, "$gte": ranged, "$lt": ranged, "$lte": ranged}
        if draw(st.integers(0, 2)) == 0:
            spec[field] = draw(value)  # field: value (plain $eq)
        else:
            ops = draw(st.lists(st.sampled_from(list(operand)), min_size=1, max_size=2, unique=True))
            spec[field] = {op: draw(operand[op]) for op in ops}
    return spec


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    present = draw(st.lists(st.sampled_from(FIELDS), unique=True))
    doc = {f: draw(st.sampled_from(VALUES)) for f in present}
    # the words QUERY searches: a member filters never name, first, last or in between
    members = list(doc.items())
    members.insert(draw(st.integers(0, len(members))), ("text", draw(st.sampled_from([QUERY_WORD, "other"]))))
    return dict(members)


def compact(doc: dict[str, Any]) -> str:
    """The value as MEM.PUT stores it (memd.commands.memory re-serializes the same way)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def found(items: list[MemItem]) -> list[tuple[str, str]]:
    return [(i.ns, i.key) for i in items]


# ---- filters: engine vs reference -------------------------------------------------------------

PLANS = ("recent", "no-walk", "query")


async def search_plans(engine: Engine, prefix: str, spec: dict[str, Any]) -> dict[str, list[MemItem]]:
    """The filter-only search as the engine plans it, as it plans it on a large store, and ranked.

    - "recent": no QUERY, whatever plan the engine picks (on a small store: the recency walk);
    - "no-walk": no QUERY, the walk down the recency index made to give up at once, as it does
      when matches are rare on a large store (then FTS5 may narrow by the filter's equalities);
    - "query": with QUERY_WORD (FTS5 narrows by namespace and filter, SQL judges).
    """
    conds = parse_filter(spec)  # callers only pass valid filters
    mem = engine.memories
    out: dict[str, list[MemItem]] = {}
    for plan in PLANS:
        try:
            if plan == "query":
                out[plan] = await mem.search(prefix, QUERY_WORD, conds, 1000, 0)
            elif plan == "no-walk":
                with mock.patch.object(store_mod, "_recent_first", return_value=None):
                    out[plan] = await mem.search(prefix, None, conds, 1000, 0)
            else:
                out[plan] = await mem.search(prefix, None, conds, 1000, 0)
        except Exception as exc:  # name the filter and the plan
            raise AssertionError(f"FILTER {spec!r} under {prefix!r} ({plan}): {exc!r}") from exc
    ranked = [(-i.score, i.ns, i.key) for i in out["query"]]  # type: ignore[operator]
    assert ranked == sorted(ranked), spec  # best first, ties by namespace then key
    return out


# No shrinking: an example is an engine with ~45 memories (~0.15 s), and shrinking one took longer
# than the test timeout. A failure names the FILTER and the memories engine and reference disagree on.
@settings(max_examples=80, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(),
       docs=st.lists(st.tuples(st.sampled_from(NAMESPACES), documents()), min_size=30, max_size=60),
       prefix=st.sampled_from(["", "", "n1"]),
       split=st.integers(0, 60))
def test_filter_only_search_selects_what_the_reference_selects(
        data: st.DataObject, docs: list[tuple[str, dict[str, Any]]], prefix: str, split: int) -> None:
    seen: dict[str, list[Any]] = {}
    for _, doc in docs:
        for field, v in doc.items():
            seen.setdefault(field, []).append(v)
    specs = data.draw(st.lists(filters(seen), min_size=6, max_size=10), label="filters")

    async def run() -> None:
        clock = FakeClock()
        with tempfile.TemporaryDirectory(prefix="memd-filters-") as tmp:
            async with Engine(tmp, clock=clock, flush_max_age=3600) as engine:
                mem = engine.memories
                stored: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
                for i, (ns, doc) in enumerate(docs):
                    if i == split:
                        await engine.flush()  # two flushes: memories written by different transactions
                    clock.advance(0.125 * (i % 3))  # some share updated_at: ties order by ns, key
                    key = f"k{i:02d}"
                    mem.put(ns, key, compact(doc))
                    stored[(ns, key)] = (int(clock() * 1000), json.loads(compact(doc)))
                await engine.flush()  # searches read SQLite only (the command layer flushes first)
                assert not mem.pending("")
                under = {ident: v for ident, v in stored.items()
                         if not prefix or ident[0] == prefix or ident[0].startswith(prefix + ".")}
                by_recency = [ident for ident, _ in sorted(under.items(), key=lambda p: (-p[1][0], p[0]))]
                for spec in specs:
                    want = [ident for ident in by_recency if ref_filter(stored[ident][1], spec)]
                    plans = await search_plans(engine, prefix, spec)
                    for plan, items in plans.items():
                        got, expected = found(items), want
                        if plan == "query":  # ranked: compared as sets (the order is checked in search_plans)
                            got = sorted(got)
                            expected = sorted(ident for ident in want if stored[ident][1]["text"] == QUERY_WORD)
                        assert got == expected, (plan, spec, prefix,
                                                 {ident: stored[ident][1] for ident in set(got) ^ set(expected)})
    anyio.run(run)


async def _keys_matching(engine: Engine, spec: dict[str, Any]) -> list[str]:
    """The keys a filter selects, the same through every plan (every memory holds QUERY_WORD)."""
    answers = {plan: sorted(i.key for i in items) for plan, items in (await search_plans(engine, "", spec)).items()}
    assert len(set(map(tuple, answers.values()))) == 1, (spec, answers)
    return answers["recent"]


@pytest.mark.anyio
async def test_filter_edge_cases(fake_clock: FakeClock, tmp_path: Any) -> None:
    """A few hand-picked cases, readable on their own (the property test above generalizes them)."""
    docs: dict[str, dict[str, Any]] = {
        "long64": {"a": LONG64, "b": 2**53 - 1},
        "long65": {"a": LONG64 + "x", "b": 2**53},
        "quote": {"a": '"', "b": 2**53 + 1, 'q"x': 1},
        "brackets": {"a": "[]", "b": True, 'q"x': "[]"},
        "empty_list": {"a": [], "b": 1, 'q"x': []},
        "null": {"a": None, "b": 1.0},
        "nested": {"n": {"a": 5}, "s": ',"a":5}'},
        "real": {"a": 5.0, "b": -0.0},
        "int": {"a": 5, "b": 0},
        "int55": {"b": 12, "a": 55},  # "a":55 starts with "a":5, "b":12 with "b":1
    }
    async with Engine(str(tmp_path), clock=fake_clock, flush_max_age=3600) as engine:
        for key, doc in docs.items():
            engine.memories.put("ns", key, compact({**doc, "text": QUERY_WORD}))
        await engine.flush()
        assert await _keys_matching(engine, {"a": LONG64}) == ["long64"]
        assert await _keys_matching(engine, {"a": LONG64 + "x"}) == ["long65"]
        assert await _keys_matching(engine, {"a": {"$gt": LONG64}}) == ["long65"]  # "x"*64 < "x"*65
        assert await _keys_matching(engine, {"a": {"$gte": LONG64, "$lt": LONG64 + "x"}}) == ["long64"]
        assert await _keys_matching(engine, {"a": "[]"}) == ["brackets"]  # the string, not the placeholder
        assert await _keys_matching(engine, {"a": []}) == ["empty_list"]  # the array, not the string
        assert await _keys_matching(engine, {'q"x': "[]"}) == ["brackets"]
        assert await _keys_matching(engine, {'q"x': []}) == ["empty_list"]
        assert await _keys_matching(engine, {'q"x': {"$ne": 1}}) == sorted(set(docs) - {"quote"})
        assert await _keys_matching(engine, {"a": '"'}) == ["quote"]
        assert await _keys_matching(engine, {"a": 5}) == ["int", "real"]  # 5 equals 5.0
        assert await _keys_matching(engine, {"a": 5.0}) == ["int", "real"]
        assert await _keys_matching(engine, {"a": {"$in": [5, None]}}) == ["int", "nested", "null", "real"]
        assert await _keys_matching(engine, {"a": {"$ne": None}}) == sorted(set(docs) - {"nested", "null"})
        assert await _keys_matching(engine, {"b": 1}) == ["empty_list", "null"]  # not true
        assert await _keys_matching(engine, {"b": True}) == ["brackets"]
        assert await _keys_matching(engine, {"b": 0}) == ["int", "real"]  # -0.0 equals 0
        assert await _keys_matching(engine, {"b": {"$gte": 2**53}}) == ["long65", "quote"]
        assert await _keys_matching(engine, {"b": {"$gt": 2.0**53}}) == ["quote"]
        assert await _keys_matching(engine, {"b": {"$lt": 2**53, "$gt": 1}}) == ["int55", "long64"]
        assert await _keys_matching(engine, {"a": {"$in": [55, 12]}}) == ["int55"]
        assert await _keys_matching(engine, {"b": 2**53 + 1}) == ["quote"]
        assert await _keys_matching(engine, {"b": 2.0**53}) == ["long65"]  # 2^53 + 1 is not the double 2^53
        assert await _keys_matching(engine, {"n": {"a": 5}}) == ["nested"]
        assert await _keys_matching(engine, {"a": {"$lt": 6}}) == ["int", "real"]  # nested "a" is not top-level


@pytest.mark.anyio
async def test_int64_min_at_the_top_level_flushes_and_filters(fake_clock: FakeClock, tmp_path: Any) -> None:
    """-2^63 is a valid JSON integer (and a valid FILTER operand): storing it must not break the flush."""
    async with Engine(str(tmp_path), clock=fake_clock, flush_max_age=3600) as engine:
        engine.memories.put("ns", "min", compact({"a": -(2**63), "text": QUERY_WORD}))
        engine.memories.put("ns", "one", compact({"a": 1, "text": QUERY_WORD}))
        await engine.flush()
        assert not engine.memories.pending("")
        assert await _keys_matching(engine, {"a": -(2**63)}) == ["min"]
        assert await _keys_matching(engine, {"a": {"$lt": 0}}) == ["min"]
        assert await _keys_matching(engine, {"a": {"$ne": 1}}) == ["min"]


def test_filter_json_accepts_nonfinite_numbers_values_do_not() -> None:
    """FILTER text may hold NaN, Infinity, -Infinity and 1e400 (json.dumps(float("inf")) writes
    Infinity); a stored value stays strict JSON."""
    spec, _ = load_json(b'{"a": {"$lt": Infinity, "$gt": -Infinity}, "b": NaN, "c": {"$lte": 1e400}}',
                        "FILTER", nonfinite=True)
    conds = parse_filter(spec)
    assert [(f, op) for f, op, _ in conds] == [("a", "$lt"), ("a", "$gt"), ("b", "$eq"), ("c", "$lte")]
    assert math.isnan(conds[2][2]) and conds[3][2] == math.inf
    for text in (b'{"a": Infinity}', b'{"a": NaN}', b'{"a": -Infinity}', b'{"a": 1e400}'):
        with pytest.raises(CommandError, match="not valid JSON"):
            load_json(text, "value")
    with pytest.raises(ValueError, match="out of range"):
        parse_filter({"a": {"$lt": 2**63}})  # integers still fit int64


@pytest.mark.parametrize(("op", "value", "sql"), [
    ("$eq", math.inf, "0"), ("$eq", math.nan, "0"), ("$ne", -math.inf, "1"), ("$ne", math.nan, "1"),
    ("$gt", math.inf, "0"), ("$gte", math.inf, "0"), ("$lt", -math.inf, "0"), ("$lte", -math.inf, "0"),
    ("$lt", math.nan, "0"), ("$gte", math.nan, "0"),
])
def test_nonfinite_operands_compile_to_constants(op: str, value: float, sql: str) -> None:
    """SQLite has no NaN (it binds one as NULL) and no stored value is infinite: constants."""
    for field in ("a", 'q"x'):  # the JSON-path and the json_each forms alike
        assert cond_sql((field, op, value)) == (sql, [])


def test_ranges_to_infinity_compile_to_every_number() -> None:
    """$lt/$lte +inf and $gt/$gte -inf hold for every number: a range to the largest double."""
    for op, value, bound in (("$lt", math.inf, sys.float_info.max), ("$lte", math.inf, sys.float_info.max),
                             ("$gt", -math.inf, -sys.float_info.max), ("$gte", -math.inf, -sys.float_info.max)):
        sql, params = cond_sql(("a", op, value))
        assert params and all(math.isfinite(p) for p in params if isinstance(p, float)), params
        assert bound in params and ("<=" if value > 0 else ">=") in sql
    sql, params = cond_sql(("a", "$in", [math.nan, 5, math.inf]))
    assert math.inf not in params and not any(isinstance(p, float) and math.isnan(p) for p in params)


@pytest.mark.anyio
async def test_nonfinite_filter_operands(fake_clock: FakeClock, tmp_path: Any) -> None:
    """What LangGraph's InMemoryStore answers (Python float comparisons) for the same operands."""
    docs: dict[str, dict[str, Any]] = {
        "int": {"a": 5}, "neg": {"a": -(2**63)}, "big": {"a": 1.7976931348623157e308},
        "small": {"a": -1.7976931348623157e308}, "real": {"a": 0.5}, "text": {"a": "inf"},
        "bool": {"a": True}, "null": {"a": None}, "missing": {},
    }
    numbers = ["big", "int", "neg", "real", "small"]
    async with Engine(str(tmp_path), clock=fake_clock, flush_max_age=3600) as engine:
        for key, doc in docs.items():
            engine.memories.put("ns", key, compact({**doc, "text": QUERY_WORD}))
        await engine.flush()
        for op in ("$lt", "$lte"):
            assert await _keys_matching(engine, {"a": {op: math.inf}}) == numbers
            assert await _keys_matching(engine, {"a": {op: -math.inf}}) == []
            assert await _keys_matching(engine, {"a": {op: math.nan}}) == []
        for op in ("$gt", "$gte"):
            assert await _keys_matching(engine, {"a": {op: -math.inf}}) == numbers
            assert await _keys_matching(engine, {"a": {op: math.inf}}) == []
            assert await _keys_matching(engine, {"a": {op: math.nan}}) == []
        assert await _keys_matching(engine, {"a": {"$gt": -math.inf, "$lt": 1}}) == ["neg", "real", "small"]
        everything = sorted(docs)
        for v in NONFINITE:
            assert await _keys_matching(engine, {"a": v}) == []
            assert await _keys_matching(engine, {"a": {"$ne": v}}) == everything
            assert await _keys_matching(engine, {"a": {"$in": [v, 5]}}) == ["int"]
            assert await _keys_matching(engine, {"a": [v]}) == []


# ---- ranked search: every window is a slice of the full ranking -------------------------------

WINDOWS = [(1, 0), (3, 2), (10, 0), (10, 5), (50, 0)]
RANKED_NAMESPACES = ["p", "p.q", "p.qr", "p.q.s", "r"]
QUERIES = {  # query -> which texts match it (the words are their own stems)
    "apple": lambda words: "apple" in words,
    "banana OR cherry": lambda words: "banana" in words or "cherry" in words,
    "cherry": lambda words: "cherry" in words,
    "date": lambda words: "date" in words,
    "kiwi": lambda words: "kiwi" in words,
    "lime": lambda words: "lime" in words,
}
RANK_FILTERS: list[dict[str, Any] | None] = [
    None, {"n": {"$gte": 3}}, {"kind": {"$in": ["x", None]}},
    {"zz": None},  # true for every memory, yet a FILTER: the engine may take another plan
    {"kind": "x"}, {"n": 2}, {"n": {"$in": [1, 2.0, 40]}}, {"kind": "y", "n": {"$ne": 4}},  # equalities
]


def _text(i: int) -> str:
    """Few distinct texts, so most scores tie; fillers vary the length, so scores are not all equal."""
    words = ["apple"] * (1 + i % 2) + ["banana"] * (i % 3 == 0) + ["cherry"] * (i % 5 == 1) + ["date"] * (i % 37 == 0)
    return " ".join(words + ["filler"] * (i % 4 // 2))


@pytest.mark.anyio
async def test_ranked_windows_are_slices_of_the_full_ranking(fake_clock: FakeClock, tmp_path: Any) -> None:
    async with Engine(str(tmp_path), clock=fake_clock, flush_max_age=3600) as engine:
        mem = engine.memories
        live: dict[tuple[str, str], tuple[int, str, dict[str, Any]]] = {}  # ident -> (version, text, doc)
        for i in range(200):
            ns, key = RANKED_NAMESPACES[i % 5], f"k{i % 70:02d}"  # a key in several namespaces
            n = i % 7 if i % 4 else float(i % 7)  # 2.0 equals 2
            doc: dict[str, Any] = {"text": _text(i), "n": n, **({"kind": "xy"[i % 2]} if i % 3 else {})}
            if i % 6 == 5:
                # expiring soon, with the best-scoring text (short, the word twice): among the best
                # candidates of every query, yet never a result
                doc["text"] = "apple apple banana banana cherry cherry date date"
                mem.put(ns, key, compact(doc), ttl_ms=1000)
                live.pop((ns, key), None)
            else:
                ttl = 10**9 if i % 11 == 0 else None  # a TTL that does not expire, or none
                live[(ns, key)] = (mem.put(ns, key, compact(doc), ttl_ms=ttl), doc["text"], doc)
            if i % 50 == 49:
                await engine.flush()
        for ident in list(live)[::13]:  # deleted: gone from the index too
            assert mem.delete(*ident)
            del live[ident]
        # "kiwi": 60 memories alike (one score), written in reverse key order, so FTS5's order within
        # the tie is not the answer's and the tie runs past any set of best candidates a window takes
        for j in reversed(range(60)):
            ident, doc = ("pr"[j % 2], f"kiwi{j:02d}"), {"text": "kiwi", "n": 1, "kind": "x"}
            live[ident] = (mem.put(*ident, compact(doc)), doc["text"], doc)
        # "lime": distinct scores (longer text, lower score), four in five expiring: the best
        # candidates hold fewer live matches than a window needs, and more follow them
        for j in range(80):
            ident, doc = ("pr"[j % 2], f"lime{j:02d}"), {"text": " ".join(["lime"] + ["pad"] * j), "n": 1, "kind": "x"}
            if j % 5 != 1:
                mem.put(*ident, compact(doc), ttl_ms=1000)
            else:
                live[ident] = (mem.put(*ident, compact(doc)), doc["text"], doc)
        best = {"text": "apple apple banana banana cherry cherry date date"}
        live[("p", "k00")] = (mem.put("p", "k00", compact(best)), best["text"], best)  # rewritten (or new)
        await engine.flush()
        fake_clock.advance(5)  # the short TTLs expire; compaction has not run: still in the FTS index
        assert not mem.pending("")

        checked = split_ties = 0
        for query, matches in QUERIES.items():
            everything = await mem.search("", query, [], 10000, 0)
            for prefix in ("", "p", "p.q"):
                for spec in RANK_FILTERS:
                    conds = parse_filter(spec) if spec is not None else []
                    full = await mem.search(prefix, query, conds, 10000, 0)
                    rows = [(i.ns, i.key, i.version, i.score) for i in full]
                    want_idents = sorted(
                        ident for ident, (_, text, doc) in live.items()
                        if matches(text.split()) and (spec is None or ref_filter(doc, spec))
                        and (not prefix or ident[0] == prefix or ident[0].startswith(prefix + ".")))
                    assert sorted((r[0], r[1]) for r in rows) == want_idents, (query, prefix, spec)
                    assert [r[2] for r in rows] == [live[(r[0], r[1])][0] for r in rows]
                    assert all(r[3] is not None and r[3] > 0 for r in rows)
                    assert rows == sorted(rows, key=lambda r: (-(r[3] or 0.0), r[0], r[1])), (query, prefix, spec)
                    # the same score as in the unprefixed, unfiltered ranking: the prefix and the
                    # filter narrow the list, they do not re-rank it
                    ranked_all = [(i.ns, i.key, i.version, i.score) for i in everything]
                    assert rows == [r for r in ranked_all if (r[0], r[1]) in set(want_idents)], (query, prefix, spec)
                    for limit, offset in WINDOWS:
                        window = await mem.search(prefix, query, conds, limit, offset)
                        got = [(i.ns, i.key, i.version, i.score) for i in window]
                        assert got == rows[offset:offset + limit], (query, prefix, spec, limit, offset)
                        checked += 1
                        cut = [j for j in (offset, offset + limit) if 0 < j < len(rows)]
                        split_ties += sum(rows[j - 1][3] == rows[j][3] for j in cut)  # a tie across the edge
        assert checked == len(QUERIES) * 3 * len(RANK_FILTERS) * len(WINDOWS)
        assert split_ties >= 50, split_ties  # windows cut through ties: the order within a tie matters
