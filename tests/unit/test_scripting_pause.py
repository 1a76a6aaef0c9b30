"""Scripts pause past their budget and go on in another thread (memd.scripting.pause), written or not."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

from memd.scripting.runtime import Invocation, LuaState, Script

WRITES: list[list[bytes]] = []


def dispatch(invocation: Invocation, argv: list[bytes]) -> tuple[Any, bool]:
    if argv[0] == b"bad":
        return b"WRONGTYPE Operation against a key holding the wrong kind of value", True
    if argv[0] == b"set":
        invocation.dirty = True
        WRITES.append(argv)
        return b"OK", False
    return b"v", False


def invocation(script: Script, budget: float) -> Invocation:
    inv = Invocation(ctx=None, sha=script.sha, read_only=False)
    inv.budget_at = time.monotonic() + budget if budget else 0.0
    return inv


def test_a_script_that_wrote_pauses_and_goes_on_in_another_thread() -> None:
    state = LuaState(dispatch, lambda name: True)
    assert state.pauser.enabled  # this Lua build's layout is the one expected
    script = state.load(b"redis.call('set', KEYS[1], ARGV[1]) local i = 0 while i < 20000000 do i = i + 1 end "
                        b"return {i, KEYS[1]}")
    inv = invocation(script, 0.005)
    t0 = time.monotonic()
    assert state.start(inv, script, [b"k"], [b"1"]) == (False, None)
    assert time.monotonic() - t0 < 0.5  # paused soon after its budget
    assert inv.dirty and WRITES[-1] == [b"set", b"k", b"1"]
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(state.resume(inv)))
    worker.start()
    ticks = 0
    while worker.is_alive():  # this thread stays free meanwhile
        ticks += 1
        time.sleep(0.001)
    assert out == [(True, [20000000, b"k"])]
    assert ticks > 5
    assert state.current is None
    assert state.run(invocation(script, 0), script, [b"x"], [b"2"]) == [20000000, b"x"]  # the coroutine is reused


def test_no_pause_inside_a_pcall_until_the_script_is_back_in_its_frames() -> None:
    state = LuaState(dispatch, lambda name: True)
    script = state.load(b"local ok, n = pcall(function() local i = 0 while i < 3000000 do i = i + 1 end return i end) "
                        b"local j = 0 while j < 3000000 do j = j + 1 end return n + j")
    inv = invocation(script, 0.0001)
    assert state.start(inv, script, [], []) == (False, None)
    assert state.resume(inv) == (True, 6000000)


def test_errors_yields_and_running() -> None:
    state = LuaState(dispatch, lambda name: True)
    yielder = state.load(b"local x = 1\ncoroutine.yield(1)")
    reply = state.run(invocation(yielder, 0), yielder, [], [])
    assert str(reply) == ("attempt to yield across metamethod/C-call boundary script: "
                          f"{yielder.sha.decode()}, on @user_script:2.")  # as Redis 7.0 answers
    running = state.load(b"return coroutine.running() == nil")
    assert state.run(invocation(running, 0), running, [], []) == 1
    nested = state.load(b"local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end) "
                        b"local _, x = coroutine.resume(co, 1) local _, y = coroutine.resume(co, 10) return {x, y}")
    assert state.run(invocation(nested, 0), nested, [], []) == [2, 20]


def test_failing_scripts_free_their_coroutines_safely() -> None:
    """Errors raised by Python into a coroutine that then dies, many times over, with collections between:
    no Lua object of a dead coroutine is released through it (this crashed before exceptions were stripped)."""
    state = LuaState(dispatch, lambda name: True)
    bad = state.load(b"return redis.call('bad')")
    lib = state.load(b"return cjson.encode(function() end)")
    good = state.load(b"return redis.call('get', KEYS[1])")
    for i in range(300):
        assert "WRONGTYPE" in str(state.run(invocation(bad, 0), bad, [b"k"], [b"1"]))
        assert "Cannot serialise" in str(state.run(invocation(lib, 0), lib, [], []))
        if i % 50 == 0:
            gc.collect()
            state.lua.eval("collectgarbage()")
        assert state.run(invocation(good, 0), good, [b"k"], []) == b"v"


def test_a_scripts_own_coroutines_are_never_paused() -> None:
    """Coroutines a script makes inherit the count hook (Lua 5.1 copies it): only the coroutine memd runs
    scripts in may be yielded, or the script's own resume would return early."""
    state = LuaState(dispatch, lambda name: True)
    script = state.load(b"local co = coroutine.create(function() local i = 0 while i < 3000000 do i = i + 1 end "
                        b"coroutine.yield(i) return 'done' end) "
                        b"local _, a = coroutine.resume(co) local _, b = coroutine.resume(co) "
                        b"local j = 0 while j < 3000000 do j = j + 1 end return {a, b}")
    inv = invocation(script, 0.0001)
    done, reply = state.start(inv, script, [], [])
    while not done:
        done, reply = state.resume(inv)
    assert reply == [3000000, b"done"]
