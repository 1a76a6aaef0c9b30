"""The Lua 5.1 state scripts run in (lupa's ``lua51``), as Redis 7.0's eval.c / script_lua.c set it up.

One :class:`LuaState` holds the compiled scripts (by SHA1, as ``f_<sha>``
functions in Redis) and runs one :class:`Invocation` at a time; SCRIPT FLUSH
replaces the whole state, as Redis does. What a script's ``redis.call``
does is not decided here: the state calls ``dispatch(invocation, argv)``,
given by the command layer (:mod:`memd.commands.scripting`), which runs the
command through memd's command table and returns ``(reply, failed)``.

Scripts run in a Lua coroutine. Every 100000 Lua instructions a count hook
(:mod:`memd.scripting.pause`) looks at the invocation: past ``budget_at`` (a
run on the event loop that went on too long, written or not) it pauses the
script, and :meth:`LuaState.resume` goes on with it in the worker thread;
flagged by SCRIPT KILL (a plain attribute another thread may set), it hands
over to the Lua kill hook, which raises on every line (Redis's
``luaMaskCountHook``). Lua runs with the GIL released (lupa), so a script in
the worker thread leaves the event loop free.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lupa import lua51  # type: ignore[import-untyped]

from memd.errors import CommandError
from memd.resp import ErrorReply
from memd.scripting import bitlib, cjsonlib, msgpack, structlib
from memd.scripting.convert import ToLua, error_reply, error_text, from_lua, redis_error_text
from memd.scripting.luasrc import BOOTSTRAP
from memd.scripting.pause import Pauser

log = logging.getLogger("memd.script")
REDIS_VERSION = b"7.0.15"
REDIS_VERSION_NUM = 0x07000F
SHEBANG_FLAGS = ("no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys")
MANY_ARGS = 64  # more keys and arguments than this go to Lua as two tables (see luasrc's start)
_LOG_LEVELS = (logging.DEBUG, logging.INFO, logging.INFO, logging.WARNING)  # redis.LOG_DEBUG .. LOG_WARNING


@dataclass(slots=True)
class Script:
    """A compiled script: ``flags`` is None without a shebang (Redis's EVAL compatibility mode)."""

    sha: bytes
    body: bytes
    function: Any
    flags: frozenset[str] | None


@dataclass(eq=False, slots=True)
class Invocation:
    """One run of a script: what ``redis.call`` needs and what SCRIPT KILL looks at."""

    ctx: Any  # the script's own Context (the caller's database; its protocol is redis.setresp's)
    sha: bytes
    read_only: bool  # EVAL_RO / EVALSHA_RO, or a 'no-writes' shebang
    allow_oom: bool = False
    resp: int = 2
    dirty: bool = False  # a write command ran: SCRIPT KILL answers UNKILLABLE
    killed: bool = False
    kill_seen: bool = False
    budget_at: float = 0.0  # run on the event loop: past this monotonic time it pauses (memd.scripting.pause)
    in_worker: bool = False  # running in the worker thread: commands that belong to the loop are refused
    started: float = field(default_factory=time.monotonic)


Dispatch = Callable[[Invocation, list[bytes]], tuple[Any, bool]]


def sha1hex(data: bytes) -> bytes:
    return hashlib.sha1(data).hexdigest().encode()


def parse_shebang(body: bytes) -> tuple[frozenset[str] | None, int]:
    """A ``#!lua flags=...`` first line: (flags, bytes to skip), or (None, 0) without one (eval.c)."""
    if not body.startswith(b"#!"):
        return None, 0
    end = body.find(b"\n")
    if end < 0:
        raise CommandError("Invalid script shebang")
    parts = body[:end].split()
    if not parts:
        raise CommandError("Invalid engine in script shebang")
    if parts[0] != b"#!lua":
        raise CommandError(f"Unexpected engine in script shebang: {parts[0].decode(errors='replace')}")
    flags: set[str] = set()
    for part in parts[1:]:
        if not part.startswith(b"flags="):
            raise CommandError(f"Unknown lua shebang option: {part.decode(errors='replace')}")
        for flag in part[6:].split(b","):
            name = flag.decode(errors="replace")
            if not flag:
                continue
            if name not in SHEBANG_FLAGS:
                raise CommandError(f"Unexpected flag in script shebang: {name}")
            flags.add(name)
    return frozenset(flags), end


class LuaState:
    """A sandboxed Lua 5.1 interpreter with Redis's API, its script cache, and the current invocation."""

    def __init__(self, dispatch: Dispatch, known_command: Callable[[bytes], bool]) -> None:
        self.dispatch = dispatch
        self.known_command = known_command
        self.current: Invocation | None = None
        self.scripts: dict[bytes, Script] = {}
        self._rng = random.Random(0)
        self.pauser = Pauser(lambda: self.current)
        self._open()

    def _open(self) -> None:
        lua = lua51.LuaRuntime(encoding=None, register_eval=False, register_builtins=False,
                               unpack_returned_tuples=True)
        self.lua = lua
        self.to_lua = ToLua(lua)
        self.rawget = lua.eval("rawget")
        null = lua.eval("newproxy()")
        decode = cjsonlib.make_decode(lua.table, null)
        api = _raising(table_error=True)
        libs = _raising(table_error=False)
        py = lua.table_from({
            b"call": self._call_raising, b"pcall": _contained(self._pcall),
            b"unwrap": _contained(self._unwrap), b"kill_check": _contained(self._kill_check), b"sha1hex": api(self._sha1hex), b"log": api(self._log),
            b"setresp": api(self._setresp), b"set_repl": api(self._set_repl),
            b"acl_check_cmd": api(self._acl_check_cmd),
            b"error_table": _contained(self._error_table), b"version": REDIS_VERSION, b"version_num": REDIS_VERSION_NUM,
            b"cjson": lua.table_from({b"decode": libs(decode)}),
            b"cjson_encode": _contained(_cjson_encode(lua.execute(cjsonlib.ENCODE, null))), b"cjson_null": null,
            b"cmsgpack": lua.table_from({b"pack": libs(msgpack.pack), **{
                k.encode(): libs(v) for k, v in msgpack.make_unpackers(lua.table).items()}}),
            b"bit": lua.table_from({k.encode(): libs(_bit(k, f)) for k, f in bitlib.FUNCTIONS.items()}),
            b"struct": lua.table_from({k.encode(): libs(f) for k, f in structlib.FUNCTIONS.items()}),
            b"random": libs(self._random), b"randomseed": libs(self._randomseed),
        })
        self._new_runner, self._start, self._resume, self._yielded, self._compile = lua.execute(BOOTSTRAP, py)
        self._runner: int | None = None  # the address of the coroutine scripts run in (None: make one)

    # ---- the script cache ---------------------------------------------------------------------

    def load(self, body: bytes) -> Script:
        """Compile ``body`` (once: a known SHA1 is not compiled again), as Redis's luaCreateFunction."""
        sha = sha1hex(body)
        script = self.scripts.get(sha)
        if script is not None:
            return script
        flags, skip = parse_shebang(body)
        function, err = self._compile(body[skip:], b"@user_script")
        if function is None:
            message = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
            raise CommandError(f"Error compiling script (new function): {message}")
        script = Script(sha, body, function, flags)
        self.scripts[sha] = script
        return script

    def flush(self) -> None:
        """SCRIPT FLUSH: forget every script and start from a fresh Lua state."""
        self.scripts = {}
        self._open()

    def memory(self) -> int:
        """Bytes the Lua state uses (INFO's used_memory_lua)."""
        return int(self.lua.eval("collectgarbage('count')") * 1024)

    # ---- running ------------------------------------------------------------------------------

    def run(self, invocation: Invocation, script: Script, keys: list[bytes], args: list[bytes]) -> Any:
        """Run ``script`` to completion (or its kill) and return its reply."""
        invocation.budget_at = 0.0
        done, reply = self.start(invocation, script, keys, args)
        assert done  # (without a budget it never pauses)
        return reply

    def start(self, invocation: Invocation, script: Script, keys: list[bytes],
              args: list[bytes]) -> tuple[bool, Any]:
        """Run ``script``: (True, reply) once it ended, or (False, None) when it paused, past
        ``invocation.budget_at`` (then :meth:`resume` goes on with it, from any thread)."""
        if self._runner is None:
            self._runner = self.pauser.install(self._new_runner())
        self.current = invocation
        try:
            if len(keys) + len(args) <= MANY_ARGS:
                ok, result = self._start(script.function, len(keys), *keys, *args)
            else:
                ok, result = self._start(script.function, self.lua.table_from(keys), self.lua.table_from(args))
        except BaseException:
            self._end()
            raise
        return self._outcome(invocation, ok, result)

    def resume(self, invocation: Invocation) -> tuple[bool, Any]:
        """Go on with the script :meth:`start` paused (its budget is cleared first, or it pauses again)."""
        self.current = invocation
        try:
            ok, result = self._resume()
        except BaseException:
            self._end()
            raise
        return self._outcome(invocation, ok, result)

    def _outcome(self, invocation: Invocation, ok: Any, result: Any) -> tuple[bool, Any]:
        if ok is None:
            if self.pauser.paused:  # our hook paused it: the caller moves it (the invocation stays current)
                self.pauser.paused = False
                return False, None
            ok, result = self._yielded()  # its own coroutine.yield, outside a coroutine of its own
        self._end()
        if not ok:
            self._runner = None  # (the coroutine died with the script)
            return True, self._error(result, invocation.sha)
        return True, from_lua(result, invocation.resp, self.rawget)

    def _end(self) -> None:
        self.current = None
        self.pauser.paused = False

    def _error(self, result: Any, sha: bytes) -> Any:
        """The reply for a script that raised: Redis's "-<err> script: <sha>, on <source>:<line>."."""
        rawget = self.rawget
        if lua51.lua_type(result) != "table":
            return CommandError(f"Error running script {sha.decode()}, execution failure")
        err = rawget(result, b"err")
        text = err if isinstance(err, bytes) else b"%.14g" % err if isinstance(err, (int, float)) else b"ERR"
        source, line = rawget(result, b"source"), rawget(result, b"line")
        if isinstance(source, bytes) and isinstance(line, (int, float)):
            text += b" script: %b, on %b:%d." % (sha, source, int(line))
        return error_reply(text)

    # ---- the redis.* API (called from Lua) -------------------------------------------------------

    def _call_raising(self, *args: Any) -> Any:
        """redis.call: an error reply raises (as a Python exception the error handler unwraps).

        The exception carries the error's text, never a Lua object, and no traceback (see _contained,
        inlined here: this is every redis.call's path)."""
        try:
            value, failed = self._call(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised, stripped (as _contained does)
            error: BaseException = exc
            error.__traceback__ = error.__context__ = error.__cause__ = None
        else:
            if not failed:
                return value
            error = ScriptRaise(value)
        del args
        raise error

    def _pcall(self, *args: Any) -> Any:
        """redis.pcall: an error reply is returned as its error table."""
        value, failed = self._call(*args)
        if failed:
            return self.to_lua.error_table(value)
        return value

    def _unwrap(self, exc: Any, where: bytes) -> Any:
        """What a Python exception raised into Lua stands for: an error table, or a library's message."""
        if isinstance(exc, ScriptRaise):
            return self.to_lua.error_table(exc.value)
        if isinstance(exc, LibError):
            return where + exc.message
        log.error("script_internal_error error=%r", exc)
        return self._error_table(b"internal error: " + str(exc).encode(errors="replace"))

    def _call(self, *args: Any) -> tuple[Any, bool]:
        """(the reply as a Lua value, False), or (an error's text, "CODE message", True)."""
        invocation = self.current
        if invocation is None:
            return redis_error_text(b"redis.call/pcall can only be called inside a script invocation"), True
        if invocation.killed:  # (a pcall that caught the kill on this very line)
            return redis_error_text(b"Script killed by user with SCRIPT KILL..."), True
        if not args:
            return redis_error_text(b"Please specify at least one argument for this redis lib call"), True
        argv: list[bytes] = []
        for a in args:
            t = type(a)
            if t is bytes:
                argv.append(a)
            elif t is int or t is float:
                argv.append(b"%.17g" % a)
            else:
                return redis_error_text(b"Lua redis lib command arguments must be strings or integers"), True
        try:
            reply, failed = self.dispatch(invocation, argv)
        except Exception as exc:  # noqa: BLE001 - a bug in a command must not unwind through Lua
            log.exception("script_command_failed command=%r", argv[0][:64])
            return redis_error_text(b"internal error: " + str(exc).encode(errors="replace")), True
        if failed:
            return redis_error_text(reply), True
        t = type(reply)
        if t is int or t is bytes:  # the common replies: no conversion, no error
            return reply, False
        if isinstance(reply, CommandError):
            return error_text(reply), True
        if t is ErrorReply:
            return redis_error_text(b"-" + reply.removeprefix("-").encode()), True
        try:
            return self.to_lua.convert(reply, invocation.resp), False
        except TypeError as exc:
            return redis_error_text(b"internal error: " + str(exc).encode()), True

    def _error_table(self, text: bytes) -> Any:
        """An error table from a message, "-CODE rest" or plain (then code ERR): Redis's luaPushErrorBuff."""
        return self.to_lua.error_table(redis_error_text(text))

    def _kill_check(self) -> bool:
        invocation = self.current
        if invocation is None:
            return False
        if invocation.killed:
            if not invocation.kill_seen:
                invocation.kill_seen = True
                log.warning("script_killed sha=%s (SCRIPT KILL)", invocation.sha.decode())
            return True
        return False

    def _sha1hex(self, *args: Any) -> tuple[Any, ...]:
        if len(args) != 1:
            return (b"ERR wrong number of arguments", 0)
        value = args[0]
        data = value if type(value) is bytes else b"%.14g" % value if type(value) in (int, float) else b""
        return None, 1, sha1hex(data)

    def _log(self, *args: Any) -> tuple[Any, ...]:
        if len(args) < 2:
            return (b"ERR redis.log() requires two arguments or more.", 0)
        level = args[0]
        if type(level) not in (int, float):
            return (b"ERR First argument must be a number (log level).", 0)
        if not 0 <= int(level) <= 3:
            return (b"ERR Invalid debug level.", 0)
        parts = [a if type(a) is bytes else b"%.14g" % a for a in args[1:] if type(a) in (bytes, int, float)]
        sha = self.current.sha.decode() if self.current is not None else "-"
        log.log(_LOG_LEVELS[int(level)], "script_log sha=%s message=%r", sha,
                b" ".join(parts).decode("utf-8", "replace"))
        return None, 0

    def _setresp(self, *args: Any) -> tuple[Any, ...]:
        if self.current is None:
            return (b"ERR redis.setresp can only be called inside a script invocation", 0)
        if len(args) != 1:
            return (b"ERR redis.setresp() requires one argument.", 0)
        resp = int(args[0]) if type(args[0]) in (int, float) else 0
        if resp not in (2, 3):
            return (b"ERR RESP version must be 2 or 3.", 0)
        self.current.resp = resp
        self.current.ctx.protocol = resp
        return None, 0

    def _set_repl(self, *args: Any) -> tuple[Any, ...]:
        """memd has no replicas or AOF to steer: the flags are checked as Redis checks them, then ignored."""
        if len(args) != 1:
            return (b"ERR redis.set_repl() requires two arguments.", 0)
        flags = int(args[0]) if type(args[0]) in (int, float) else 0
        if flags & ~3:
            return (b"ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.", 0)
        return None, 0

    def _acl_check_cmd(self, *args: Any) -> tuple[Any, ...]:
        """memd has one user, allowed everything: a known command is permitted."""
        if not args:
            return (b"ERR Please specify at least one argument for this redis lib call", 0)
        if type(args[0]) is not bytes or not self.known_command(args[0]):
            return (b"ERR Invalid command passed to redis.acl_check_cmd()", 0)
        return None, 1, True

    def _random(self, *args: Any) -> tuple[Any, ...]:
        r = self._rng.random()
        if not args:
            return None, 1, r
        try:
            ints = [int(a) for a in args]
        except (TypeError, ValueError):
            return (b"bad argument #1 to 'random' (number expected)",)
        if len(ints) == 1:
            if ints[0] < 1:
                return (b"bad argument #1 to 'random' (interval is empty)",)
            return None, 1, int(r * ints[0]) + 1
        if len(ints) == 2:
            if ints[0] > ints[1]:
                return (b"bad argument #2 to 'random' (interval is empty)",)
            return None, 1, int(r * (ints[1] - ints[0] + 1)) + ints[0]
        return (b"wrong number of arguments",)

    def _randomseed(self, *args: Any) -> tuple[Any, ...]:
        self._rng.seed(int(args[0]) if args and type(args[0]) in (int, float) else 0)
        return None, 0


class ScriptRaise(Exception):
    """Raised through Lua: ``value`` is the error (an error table), as Redis's luaError raises it."""

    def __init__(self, value: Any) -> None:
        super().__init__("script error")
        self.value = value


class LibError(Exception):
    """A library function's error message (Redis's luaL_error: the caller's position is prepended)."""

    def __init__(self, message: bytes) -> None:
        super().__init__(message.decode(errors="replace"))
        self.message = message


def _raising(*, table_error: bool) -> Callable[[Callable[..., tuple[Any, ...]]], Callable[..., Any]]:
    """Adapt a function returning ``(error, count, values...)`` to one Lua can call directly: it returns
    the values or raises the error (an error table for the redis.* API, a message for libraries)."""
    def adapt(fn: Callable[..., tuple[Any, ...]]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            result = fn(*args)
            if result[0] is not None:
                del args
                if table_error:
                    raise ScriptRaise(result[0])
                raise LibError(result[0])
            return result[2:2 + result[1]]
        return _contained(call)
    return adapt


def _contained(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as Lua calls it: an exception leaves it with no traceback and no chained exception.

    Lupa binds a Lua object made or received while a coroutine runs to that coroutine's
    ``lua_State``, and releases it through that state. An exception raised into Lua is held by
    Lua (a userdata) until Lua's collector frees it, possibly in the same cycle as the dead
    coroutine of a failed script: the frames of its traceback (their locals: arguments, error
    tables) must not keep such objects alive that long. The errors memd raises carry bytes.
    """
    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised, stripped
            error = exc
            error.__traceback__ = error.__context__ = error.__cause__ = None
        del args
        raise error
    return call


def _cjson_encode(encode: Any) -> Callable[..., Any]:
    """cjson.encode as a Python callable (a C function to Lua, so errors name the script's line)
    around the Lua encoder, which returns (nil, message) on failure."""
    def call(*args: Any) -> Any:
        if len(args) != 1:
            raise LibError(b"bad argument #1 to 'encode' (expected 1 argument)")
        text, err = encode(args[0])
        if text is None:
            raise LibError(err)
        return text
    return call


def _bit(name: str, fn: Callable[..., Any]) -> Callable[..., tuple[Any, ...]]:
    """A ``bit`` function in the (error, count, values...) convention of memd's Lua wrappers."""
    def call(*args: Any) -> tuple[Any, ...]:
        try:
            return None, 1, fn(*args)
        except bitlib.BitArgumentError:
            for i, a in enumerate(args, 1):
                if type(a) not in (int, float) or type(a) is bool:
                    return (f"bad argument #{i} to '{name}' (number expected, got "
                            f"{_lua_type_name(a)})".encode(),)
            return (f"bad argument #1 to '{name}' (number expected, got no value)".encode(),)
        except TypeError:
            return (f"bad argument #1 to '{name}' (number expected, got no value)".encode(),)
    return call


def _lua_type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if type(value) is bool:
        return "boolean"
    if type(value) is bytes:
        return "string"
    return lua51.lua_type(value) or "userdata"
