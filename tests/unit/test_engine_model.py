"""Model-based test: the Engine's keyspace against a plain Python model of Redis.

A hypothesis state machine runs random commands over a few keys of every type
(single commands and MULTI/EXEC-like batches), interleaved with explicit
flushes, automatic flushes (tiny ``flush_max_records``), a fake clock moving
forward (expiry), clean restarts and crash-like restarts (no final flush: the
WAL is replayed). After every step the whole observable keyspace must equal
the model's.

The engine lives on an event loop in a portal thread; every engine call goes
through ``portal.call`` so it runs on the loop thread, as commands do.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from memd.engine.keyspace import Keyspace
from memd.errors import CommandError, WrongTypeError
from tests.unit.engine_harness import Clock, EngineHarness

KEYS = [b"k0", b"k1", b"k2", b"k3", b"k4", b"k5"]
FIELDS = [b"a", b"b", b"c", b"d"]
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
VALUES = [b"", b"0", b"1", b"-3", b"x", b"yy", b"007", b"+5", b"1_0", str(INT_MAX).encode(), str(INT_MIN).encode()]
SCORES = [-2.0, -0.5, 0.0, 1.0, 1.5, 3.0, math.inf, -math.inf]

S, L, H, SET, Z = "string", "list", "hash", "set", "zset"


# ---- the model: Redis semantics written plainly ------------------------------------------------


def string2ll(raw: bytes) -> int | None:
    if len(raw) > 20 or not re.fullmatch(rb"-?[1-9][0-9]*|0", raw):
        return None
    value = int(raw)
    return value if INT_MIN <= value <= INT_MAX else None


def redis_range(n: int, start: int, stop: int) -> tuple[int, int]:
    """LRANGE / LTRIM / ZRANGE index rules -> python slice bounds."""
    if start < 0:
        start += n
    if stop < 0:
        stop += n
    start = max(start, 0)
    if start > stop or start >= n:
        return 0, 0
    return start, min(stop, n - 1) + 1


class Model:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data: dict[bytes, list[Any]] = {}  # key -> [type, value, expires_at_ms | None]

    def now(self) -> int:
        return int(self.clock.now * 1000)

    def live(self, key: bytes) -> list[Any] | None:
        e = self.data.get(key)
        if e is not None and e[2] is not None and e[2] <= self.now():
            del self.data[key]
            return None
        return e

    def typed(self, key: bytes, type_: str) -> list[Any] | None:
        e = self.live(key)
        if e is not None and e[0] != type_:
            raise WrongTypeError()
        return e

    def _drop_if_empty(self, key: bytes) -> None:
        if not self.data[key][1]:
            del self.data[key]

    # strings and keys
    def set(self, key: bytes, value: bytes, ttl: int | str | None, cond: str | None, get: bool) -> Any:
        e = self.live(key)
        if get and e is not None and e[0] != S:
            raise WrongTypeError()
        old = e[1] if get and e is not None else None
        if cond == "nx" and e is not None or cond == "xx" and e is None:
            return False, old
        if ttl == "keepttl":
            exp = e[2] if e is not None else None
        else:
            exp = None if ttl is None else self.now() + int(ttl)
        self.data[key] = [S, value, exp]
        return True, old

    def incrby(self, key: bytes, delta: int) -> int:
        e = self.typed(key, S)
        cur = 0 if e is None else string2ll(e[1])
        if cur is None:
            raise CommandError("value is not an integer or out of range")
        if not INT_MIN <= cur + delta <= INT_MAX:
            raise CommandError("increment or decrement would overflow")
        self.data[key] = [S, str(cur + delta).encode(), None if e is None else e[2]]
        return cur + delta

    def getdel(self, key: bytes) -> bytes | None:
        e = self.typed(key, S)
        if e is None:
            return None
        del self.data[key]
        return e[1]  # type: ignore[no-any-return]

    def mset(self, pairs: list[tuple[bytes, bytes]]) -> None:
        for k, v in pairs:
            self.data[k] = [S, v, None]

    def delete(self, keys: list[bytes]) -> int:
        n = 0
        for k in keys:
            if self.live(k) is not None:
                del self.data[k]
                n += 1
        return n

    def expire(self, key: bytes, ttl: int, flag: str | None) -> bool:
        e = self.live(key)
        if e is None:
            return False
        when, cur = self.now() + ttl, e[2]
        if (flag == "nx" and cur is not None or flag == "xx" and cur is None
                or flag == "gt" and (cur is None or when <= cur) or flag == "lt" and cur is not None and when >= cur):
            return False
        if when <= self.now():
            del self.data[key]
        else:
            e[2] = when
        return True

    def persist(self, key: bytes) -> bool:
        e = self.live(key)
        if e is None or e[2] is None:
            return False
        e[2] = None
        return True

    def flushall(self) -> None:
        self.data.clear()

    # lists
    def push(self, key: bytes, values: list[bytes], left: bool, only_existing: bool) -> int:
        e = self.typed(key, L)
        if e is None:
            if only_existing:
                return 0
            e = self.data[key] = [L, [], None]
        for v in values:
            if left:
                e[1].insert(0, v)
            else:
                e[1].append(v)
        return len(e[1])

    def pop(self, key: bytes, left: bool, count: int | None) -> list[bytes] | None:
        e = self.typed(key, L)
        if e is None:
            return None
        out = []
        for _ in range(min(1 if count is None else count, len(e[1]))):
            out.append(e[1].pop(0 if left else -1))
        self._drop_if_empty(key)
        return out

    def ltrim(self, key: bytes, start: int, stop: int) -> None:
        e = self.typed(key, L)
        if e is not None:
            a, b = redis_range(len(e[1]), start, stop)
            e[1] = e[1][a:b]
            self._drop_if_empty(key)

    def lrange(self, key: bytes, start: int, stop: int) -> list[bytes]:
        e = self.typed(key, L)
        if e is None:
            return []
        a, b = redis_range(len(e[1]), start, stop)
        return e[1][a:b]  # type: ignore[no-any-return]

    def lindex(self, key: bytes, index: int) -> bytes | None:
        e = self.typed(key, L)
        if e is None:
            return None
        n = len(e[1])
        index = index + n if index < 0 else index
        return e[1][index] if 0 <= index < n else None

    # hashes and sets
    def hset(self, key: bytes, pairs: list[tuple[bytes, bytes]]) -> int:
        e = self.typed(key, H) or self.data.setdefault(key, [H, {}, None])
        added = 0
        for f, v in pairs:
            added += f not in e[1]
            e[1][f] = v
        return added

    def hincrby(self, key: bytes, field: bytes, delta: int) -> int:
        e = self.typed(key, H)
        raw = None if e is None else e[1].get(field)
        cur = 0 if raw is None else string2ll(raw)
        if cur is None:
            raise CommandError("hash value is not an integer")
        if not INT_MIN <= cur + delta <= INT_MAX:
            raise CommandError("increment or decrement would overflow")
        e = e or self.data.setdefault(key, [H, {}, None])
        e[1][field] = str(cur + delta).encode()
        return cur + delta

    def sadd(self, key: bytes, members: list[bytes]) -> int:
        e = self.typed(key, SET) or self.data.setdefault(key, [SET, set(), None])
        before = len(e[1])
        e[1].update(members)
        return len(e[1]) - before

    def remove(self, type_: str, key: bytes, subs: list[bytes]) -> int:
        e = self.typed(key, type_)
        if e is None:
            return 0
        n = 0
        for s in subs:
            if s in e[1]:
                e[1].remove(s) if type_ == SET else e[1].pop(s)
                n += 1
        self._drop_if_empty(key)
        return n

    # sorted sets
    def zadd(self, key: bytes, pairs: list[tuple[float, bytes]], flag: str | None, ch: bool, incr: bool) -> Any:
        e = self.typed(key, Z)
        xx, nx, gt, lt = flag in ("xx", "xxgt", "xxlt"), flag == "nx", flag in ("gt", "xxgt"), flag in ("lt", "xxlt")
        if e is None and xx:
            return None if incr else 0
        d = {} if e is None else e[1]
        added = changed = 0
        result = None
        for score, member in pairs:
            if member in d:
                if nx:
                    continue
                cur = d[member]
                new = cur + score if incr else score
                if math.isnan(new):
                    raise CommandError("resulting score is not a number (NaN)")
                if gt and new <= cur or lt and new >= cur:
                    continue
                if new != cur:
                    d[member] = new
                    changed += 1
            elif xx:
                continue
            else:
                d[member] = new = score
                added += 1
            result = new
        if e is None and d:
            self.data[key] = [Z, d, None]
        if incr:
            return result
        return added + changed if ch else added

    def zitems(self, key: bytes) -> list[tuple[bytes, float]]:
        e = self.typed(key, Z)
        return [] if e is None else sorted(e[1].items(), key=lambda it: (it[1], it[0]))

    def zrange_rank(self, key: bytes, start: int, stop: int, rev: bool) -> list[tuple[bytes, float]]:
        items = self.zitems(key)[::-1] if rev else self.zitems(key)
        a, b = redis_range(len(items), start, stop)
        return items[a:b]

    def zrange_score(self, key: bytes, lo: float, lo_open: bool, hi: float, hi_open: bool, rev: bool,
                     offset: int, count: int) -> list[tuple[bytes, float]]:
        items = [(m, s) for m, s in self.zitems(key)
                 if (lo < s if lo_open else lo <= s) and (s < hi if hi_open else s <= hi)]
        if rev:
            items.reverse()
        if offset < 0:
            return []
        return items[offset:] if count < 0 else items[offset:offset + count]


# ---- the same commands on the engine ---------------------------------------------------------


def engine_call(ks: Keyspace, op: tuple[Any, ...]) -> Any:
    name, key, *args = op
    now = ks.now_ms()
    if name == "set":
        value, ttl, cond, get = args
        return ks.set(key, value, expires_at=None if ttl in (None, "keepttl") else now + ttl,
                      keepttl=ttl == "keepttl", nx=cond == "nx", xx=cond == "xx", get=get)
    if name == "expire":
        ttl, flag = args
        return ks.expire_at(key, now + ttl, **({flag: True} if flag else {}))
    if name == "persist":
        return ks.expire_at(key, None)
    if name == "mset":
        return ks.mset(args[0])
    if name == "delete":
        return ks.delete(args[0])
    if name == "flushall":
        return ks.flushall()
    if name == "hdel":
        return ks.hdel(key, args[0])
    if name == "srem":
        return ks.srem(key, args[0])
    if name == "zrem":
        return ks.zrem(key, args[0])
    if name == "zadd":
        pairs, flag, ch, incr = args
        flags = {f: True for f in ("nx", "xx", "gt", "lt") if flag and f in flag}
        return ks.zadd(key, pairs, ch=ch, incr=incr, **flags)
    if name == "push":
        values, left, only_existing = args
        return ks.push(key, values, left=left, only_existing=only_existing)
    if name == "pop":
        left, count = args
        return ks.pop(key, left=left, count=count)
    if name == "zrange_rank":
        return ks.zrange_by_rank(key, *args)
    if name == "zrange_score":
        return ks.zrange_by_score(key, *args)
    return getattr(ks, name)(key, *args)


def model_call(model: Model, op: tuple[Any, ...]) -> Any:
    name, key, *args = op
    if name in ("mset", "delete"):
        return getattr(model, name)(args[0])
    if name == "flushall":
        return model.flushall()
    if name in ("hdel", "srem", "zrem"):
        return model.remove({"hdel": H, "srem": SET, "zrem": Z}[name], key, args[0])
    return getattr(model, name)(key, *args)


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except WrongTypeError:
        return ("err", "WRONGTYPE")
    except CommandError as exc:
        return ("err", str(exc))


keys = st.sampled_from(KEYS)
fields = st.sampled_from(FIELDS)
small = st.lists(fields, min_size=1, max_size=3)
idx = st.integers(-5, 5)
scores = st.sampled_from(SCORES)
deltas = st.sampled_from([-3, 1, 5, INT_MAX, INT_MIN])

OPS = st.one_of(
    st.tuples(st.just("set"), keys, st.sampled_from(VALUES),
              st.sampled_from([None, None, "keepttl", -500, 1, 250, 1000, 3000]),
              st.sampled_from([None, None, "nx", "xx"]), st.booleans()),
    st.tuples(st.just("incrby"), keys, deltas),
    st.tuples(st.just("getdel"), keys),
    st.tuples(st.just("mset"), st.none(), st.lists(st.tuples(keys, st.sampled_from(VALUES)), min_size=1, max_size=3)),
    st.tuples(st.just("delete"), st.none(), st.lists(keys, min_size=1, max_size=3)),
    st.tuples(st.just("expire"), keys, st.sampled_from([-1000, 0, 1, 250, 1000, 3000]),
              st.sampled_from([None, None, "nx", "xx", "gt", "lt"])),
    st.tuples(st.just("persist"), keys),
    st.tuples(st.just("flushall"), st.none()),
    st.tuples(st.just("push"), keys, st.lists(st.sampled_from(VALUES), min_size=1, max_size=4), st.booleans(),
              st.booleans()),
    st.tuples(st.just("pop"), keys, st.booleans(), st.sampled_from([None, None, 0, 1, 2, 5])),
    st.tuples(st.just("ltrim"), keys, idx, idx),
    st.tuples(st.just("lrange"), keys, idx, idx),
    st.tuples(st.just("lindex"), keys, idx),
    st.tuples(st.just("hset"), keys, st.lists(st.tuples(fields, st.sampled_from(VALUES)), min_size=1, max_size=3)),
    st.tuples(st.just("hdel"), keys, small),
    st.tuples(st.just("hincrby"), keys, fields, deltas),
    st.tuples(st.just("sadd"), keys, small),
    st.tuples(st.just("srem"), keys, small),
    st.one_of(
        st.tuples(st.just("zadd"), keys, st.lists(st.tuples(scores, fields), min_size=1, max_size=3),
                  st.sampled_from([None, None, "nx", "xx", "gt", "lt", "xxgt", "xxlt"]), st.booleans(), st.just(False)),
        st.tuples(st.just("zadd"), keys, st.lists(st.tuples(scores, fields), min_size=1, max_size=1),
                  st.sampled_from([None, "nx", "xx", "gt", "lt"]), st.just(False), st.just(True))),
    st.tuples(st.just("zrem"), keys, small),
    st.tuples(st.just("zrange_rank"), keys, idx, idx, st.booleans()),
    st.tuples(st.just("zrange_score"), keys, scores, st.booleans(), scores, st.booleans(), st.booleans(),
              st.integers(-1, 3), st.integers(-1, 3)),
)


class EngineVsModel(EngineHarness, RuleBasedStateMachine):
    ENGINE_OPTIONS = {"flush_max_records": 7, "wal_segment_bytes": 2048, "wal_compress_min": 64}

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []  # what ran, shown when the state differs (flushes are timing-dependent)
        self.start_engine("memd-model-")
        self.model = Model(self.clock)

    # ---- rules ----

    @rule(op=OPS)
    def command(self, op: tuple[Any, ...]) -> None:
        self.steps.append(f"command {op}")
        got = self.portal.call(lambda: outcome(lambda: engine_call(self.engine.keyspace, op)))
        want = outcome(lambda: model_call(self.model, op))
        assert got == want, f"{op}: engine {got} model {want}"

    @rule(ops=st.lists(OPS, min_size=2, max_size=6))
    def transaction(self, ops: list[tuple[Any, ...]]) -> None:
        self.steps.append(f"transaction {ops}")
        def run() -> list[Any]:
            ks = self.engine.keyspace
            lsn = self.engine.last_lsn
            with self.engine.batch():  # MULTI/EXEC: a failing command does not stop the others
                results = [outcome(functools.partial(engine_call, ks, op)) for op in ops]
            assert self.engine.last_lsn in (lsn, lsn + 1), "a batch is one WAL record"
            return results

        got = self.portal.call(run)
        want = [outcome(functools.partial(model_call, self.model, op)) for op in ops]
        assert got == want, f"{ops}: engine {got} model {want}"

    @rule()
    def flush(self) -> None:
        self.steps.append("flush")
        self.portal.call(self.engine.flush)
        assert self.engine.active.records == 0 and self.engine.frozen is None

    @rule(ms=st.sampled_from([125, 250, 1000, 2500]))
    def advance_clock(self, ms: int) -> None:
        self.clock.now += ms / 1000
        self.steps.append(f"advance {ms} ms")

    @precondition(lambda self: self.restarts < 4)
    @rule(crash=st.booleans())
    def restart(self, crash: bool) -> None:
        self.steps.append(f"restart crash={crash}")
        self.reopen(crash)
        report = self.engine.recovery_report
        assert not report.truncated and not report.skipped_corrupt

    # ---- the whole observable state after every step ----

    @invariant()
    def same_state(self) -> None:
        def observe() -> dict[str, Any]:
            ks = self.engine.keyspace
            out: dict[str, Any] = {"dbsize": ks.dbsize(), "exists": ks.exists(KEYS)}
            scanned: list[bytes] = []
            after: bytes | None = None
            while True:
                found, after = ks.scan(after, 2)
                scanned.extend(found)
                if after is None:
                    break
            out["scan"] = scanned
            for k in KEYS:
                t = ks.type_name(k)
                entry: list[Any] = [t, ks.pttl(k)]
                if t == S:
                    entry.append(ks.get(k))
                elif t == L:
                    entry += [ks.lrange(k, 0, -1), ks.llen(k), [ks.lindex(k, i) for i in range(-6, 6)]]
                elif t == H:
                    entry += [ks.hgetall(k), ks.hlen(k), ks.hmget(k, FIELDS)]
                elif t == SET:
                    entry += [ks.smembers(k), ks.scard(k), [ks.sismember(k, f) for f in FIELDS]]
                elif t == Z:
                    entry += [ks.zitems(k), ks.zcard(k), [ks.zscore(k, f) for f in FIELDS]]
                out[k.decode()] = entry
            return out

        got = self.portal.call(observe)
        self.steps.append(f"  (flushes so far: {self.engine.flush_count}, lsn {self.engine.last_lsn}, "
                          f"flushed {self.engine.store.flushed_lsn})")
        m = self.model
        live = {k: e for k in KEYS if (e := m.live(k)) is not None}
        want: dict[str, Any] = {"dbsize": len(live), "exists": len(live), "scan": sorted(live)}
        for k in KEYS:
            e = live.get(k)
            if e is None:
                want[k.decode()] = ["none", -2]
                continue
            t, v, exp = e
            entry = [t, -1 if exp is None else exp - m.now()]
            if t == S:
                entry.append(v)
            elif t == L:
                entry += [list(v), len(v), [m.lindex(k, i) for i in range(-6, 6)]]
            elif t == H:
                entry += [dict(v), len(v), [v.get(f) for f in FIELDS]]
            elif t == SET:
                entry += [set(v), len(v), [f in v for f in FIELDS]]
            else:
                entry += [m.zitems(k), len(v), [v.get(f) for f in FIELDS]]
            want[k.decode()] = entry
        if got != want:
            diff = {name: (got.get(name), want[name]) for name in want if got.get(name) != want[name]}
            raise AssertionError("engine != model (engine, model): " + repr(diff) + "\nsteps:\n  "
                                 + "\n  ".join(self.steps))


EngineVsModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestEngineVsModel = EngineVsModel.TestCase
