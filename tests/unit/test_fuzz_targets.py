"""The fuzz targets' own rules, checked without libFuzzer.

The dispatch fuzzer is only meaningful if its grammar really keeps to the
``f:`` prefix (else a changed ``own:*`` key would be the fuzzer's doing, not
a bug) and really reaches every command it claims to; the RESP target's
invariants also run here under hypothesis, whose structured inputs (whole
valid pipelines near the limits) byte mutation reaches only slowly.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memd.commands import COMMANDS, load_all
from tests.fuzz import grammar, resp_target
from tests.fuzz.grammar import Source


def test_the_grammar_builds_only_commands_inside_the_prefix_and_reaches_every_allowed_command() -> None:
    load_all()
    rng = random.Random(7)
    seen: set[bytes] = set()
    for _ in range(20000):
        src = Source(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
        argv = grammar.build_command(src)
        assert grammar.allowed(argv), argv
        seen.add(argv[0].lower())
    wanted = {n for n in COMMANDS if n not in grammar.EXCLUDED and not n.startswith(b"memd.")}
    assert seen == wanted
    assert {b"shutdown", b"flushall", b"flushdb", b"swapdb", b"blpop", b"subscribe", b"eval"} <= grammar.EXCLUDED


def test_the_prefix_rule_refuses_what_could_touch_another_clients_data() -> None:
    refused = [[b"FLUSHALL"], [b"flushdb"], [b"SHUTDOWN", b"NOSAVE"], [b"MEMD.FLUSH"], [b"memd.compact"],
               [b"DEL", b"f:1", b"own:str"], [b"UNLINK", b"own:h"], [b"SET", b"own:str", b"x"],
               [b"MSET", b"f:1", b"v", b"own:num", b"1"], [b"GETDEL", b"own:str"], [b"EXPIRE", b"own:ttl", b"1"],
               [b"MEM.DEL", b"own.ns", b"k"], [b"MEM.PUT", b"own.ns", b"k", b"{}"], [b"MEM.SEARCH", b"",
                                                                                    b"REFRESHTTL"],
               [b"MEM.GET", b"fo", b"k", b"REFRESHTTL"], [b"WATCH", b"f:1", b"own:s"],
               [b"RENAME", b"f:1", b"own:x"], [b"COPY", b"f:1", b"own:x", b"REPLACE"], [b"TOUCH", b"f:1", b"own:x"],
               [b"OBJECT", b"IDLETIME", b"own:x"], [b"SORT", b"f:l", b"STORE", b"own:x"],
               [b"SORT", b"f:l", b"BY", b"own:*"], [b"SORT_RO", b"f:l", b"GET", b"own:*->f"],
               [b"CLIENT", b"KILL", b"ID", b"1"], [b"client", b"reply", b"off"], [b"CONFIG", b"SET", b"x", b"y"]]
    for argv in refused:
        assert not grammar.allowed(argv), argv
    for argv in ([b"DEL", b"f:1", b"f:"], [b"MSET", b"f:1", b"own:value"], [b"MEM.PUT", b"f.a", b"k", b"{}"],
                 [b"KEYS", b"*"], [b"NOSUCHCOMMAND", b"own:str"], [b"ZADD", b"f:z", b"1", b"own:member"],
                 [b"SORT", b"f:l", b"BY", b"nosort", b"GET", b"#", b"GET", b"f:*", b"STORE", b"f:d"],
                 [b"OBJECT", b"HELP"], [b"RANDOMKEY"]):
        assert grammar.allowed(argv), argv


frame = st.lists(st.binary(max_size=70), min_size=1, max_size=6).map(lambda c: resp_target.to_resp([c]))
piece = st.one_of(
    frame, frame, frame,
    st.sampled_from([b"PING\r\n", b"SET a 'b c'\r\n", b'GET "\\x41"\n', b"\r\n", b"*0\r\n", b"*-1\r\n",
                     b"*1\r\n$3\r\nabc\r\n", b"*2\r\n$1\r\nx\r\n:1\r\n", b"*1\r\n$-1\r\n", b"$3\r\n"]),
    st.integers(-2, 2**63 + 2).map(lambda n: b"*1\r\n$%d\r\n" % n),
    st.integers(-2, 70).map(lambda n: b"*%d\r\n" % n),
    st.binary(max_size=30),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b0=st.integers(0, 255), b1=st.integers(0, 7), cuts=st.lists(st.integers(0, 4000), max_size=12),
       pieces=st.lists(piece, max_size=20))
def test_resp_target_invariants_on_structured_pipelines(b0: int, b1: int, cuts: list[int],
                                                        pieces: list[bytes]) -> None:
    resp_target.check(resp_target.encode(b0, b1, cuts, b"".join(pieces)))
