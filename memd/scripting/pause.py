"""Pausing a running script so that another thread can go on with it (Lua 5.1's yield from a count hook).

A script first runs on the event loop (most end in microseconds; a hop to a
thread would cost more than the script). One that is still running when its
budget there is spent must leave the loop whether or not it has written: its
writes are already in the memtable, so it cannot be stopped and run again; it
has to go on from where it is, in the scripting worker thread.

Scripts therefore run in a Lua coroutine (memd.scripting.luasrc) and this
module installs a count hook on it, through Lua's C API (``lua_sethook``, the
symbols lupa's ``lua51`` module exports): every :data:`COUNT` instructions the
hook looks at the running invocation and, past its budget, calls
``lua_yield`` — Lua 5.1 lets a C count hook yield a coroutine, and resuming it
(from any thread: one at a time holds the Lua state) goes on at the next
instruction. A Lua hook (``debug.sethook``) cannot do this: it is called through
a C boundary. Lua 5.1 cannot yield across a C call either (a ``pcall`` in the
script, a metamethod): the hook then lets the script run on and asks again at
the next count, yielding once the script is back in its own frames.

Coroutines a script makes itself inherit the hook (Lua 5.1 copies it to new
threads); the hook leaves them alone: yielding one would return early from the
script's own ``coroutine.resume``. A script is paused, or killed, once back in
memd's coroutine.

SCRIPT KILL: the hook hands over to the Lua kill hook that ``debug.sethook``
registered for the coroutine (``lua_gethook`` gives its C trampoline), on
every line, which raises the kill error as Redis's luaMaskCountHook does (a
C hook cannot raise: a longjmp would unwind through Python's frames).

Whether the yield is allowed is read from the coroutine's ``lua_State``
(``nCcalls == baseCcalls``: no C call between the coroutine's start and the
running instruction). The layout of those fields is checked once against
what ``lua_sethook`` wrote; on a Lua build where it does not match, scripts are
never paused (they then keep the loop until they end, and are logged).
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable
from typing import Any

from lupa import lua51  # type: ignore[import-untyped]

log = logging.getLogger("memd.script")
COUNT = 100_000  # instructions between two looks (Redis's LUA_MASKCOUNT hook uses the same)
LUA_MASKLINE = 1 << 2
LUA_MASKCOUNT = 1 << 3
# struct lua_State (Lua 5.1, LP64): CommonHeader + status, then 9 pointers and 2 ints
_NCCALLS, _BASECCALLS, _HOOKMASK, _BASEHOOKCOUNT, _HOOK = 96, 98, 100, 104, 112

_HOOK_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_lib = ctypes.CDLL(lua51.__file__)
_lib.lua_sethook.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
_lib.lua_sethook.restype = ctypes.c_int
_lib.lua_gethook.argtypes = [ctypes.c_void_p]
_lib.lua_gethook.restype = ctypes.c_void_p
_lib.lua_yield.argtypes = [ctypes.c_void_p, ctypes.c_int]
_lib.lua_yield.restype = ctypes.c_int
_u16 = ctypes.c_uint16.from_address


class Pauser:
    """The count hook of one Lua state's script coroutine.

    ``current`` returns the running invocation (or None); the hook reads its ``budget_at``
    (monotonic seconds, 0: no budget) and ``killed``. ``paused`` tells the caller of a resume
    that returned without an end that this hook, not the script, yielded.
    """

    def __init__(self, current: Callable[[], Any]) -> None:
        self.current = current
        self.paused = False
        self.enabled = True
        self._lua_hook: int | None = None  # the C trampoline debug.sethook installed (it calls the Lua kill hook)
        self._runner = 0  # the coroutine scripts run in (coroutines a script makes inherit the hook: left alone)
        self._hook = _HOOK_T(self._on_count)  # (kept alive: Lua holds only its address)
        self._hook_address = ctypes.cast(self._hook, ctypes.c_void_p).value

    def install(self, runner: bytes) -> int:
        """Install the hook on the coroutine ``runner`` (Lua's ``tostring``: "thread: 0x..."); its address."""
        address = int(runner.rpartition(b"0x")[2], 16)
        self._runner = address
        self._lua_hook = _lib.lua_gethook(address)
        if not self.enabled:
            return address
        _lib.lua_sethook(address, self._hook_address, LUA_MASKCOUNT, COUNT)
        if (ctypes.c_uint8.from_address(address + _HOOKMASK).value != LUA_MASKCOUNT
                or ctypes.c_int.from_address(address + _BASEHOOKCOUNT).value != COUNT
                or ctypes.c_void_p.from_address(address + _HOOK).value != self._hook_address):
            log.warning("script_pause_disabled (this Lua build's lua_State layout is not the one expected: "
                        "scripts keep the event loop until they end)")
            self.enabled = False
            _lib.lua_sethook(address, self._lua_hook, LUA_MASKCOUNT, COUNT)
        return address

    def _on_count(self, state: int, _ar: int) -> None:
        """The hook (called from Lua, on whichever thread runs it; it must never raise)."""
        invocation = self.current()
        if invocation is None or state != self._runner:  # (a script's own coroutine: it runs on, unpaused)
            return
        if invocation.killed:  # the Lua kill hook raises from the next line on (and logs the kill)
            _lib.lua_sethook(state, self._lua_hook, LUA_MASKLINE, 0)
            return
        budget = invocation.budget_at
        if budget and time.monotonic() >= budget and _u16(state + _NCCALLS).value == _u16(state + _BASECCALLS).value:
            invocation.budget_at = 0.0
            self.paused = True
            _lib.lua_yield(state, 0)
