"""EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT LOAD|EXISTS|FLUSH|KILL (Redis 7.0's eval.c).

A script is one atomic step and ONE WAL record: its commands run inside
``engine.begin_batch()`` / ``end_batch()``, so after a crash all of its
writes are there or none. They run through memd's own command table with a
context of the script's own (the caller's database, the protocol
``redis.setresp`` chose), honouring the commands' flags: Redis's
``noscript`` commands are refused, and so are writes under EVAL_RO /
EVALSHA_RO or a ``no-writes`` shebang.

Where a script runs. First on the event loop itself, inside the batch, with
a budget (INLINE_BUDGET, 5 ms): most scripts (locks, rate limiters,
INCR+EXPIRE) end in microseconds, and a thread hop would cost more than the
script. Scripts run in a Lua coroutine; past the budget, whether it has written
or not, the count hook pauses it (memd.scripting.pause) and the scripting
worker thread (memd.scripting.worker) goes on with it from where it is, inside
the same batch: no other command ran in between. A script that passes the
budget three times in a row runs in the worker from the start. In the worker,
the loop waits in place for a couple of milliseconds, then the script is
escalated: the server holds every other client's commands
(``Server.script``), answers them ``-BUSY`` once the script has run past
``lua-time-limit``, and lets SCRIPT KILL through (``-UNKILLABLE`` once it
wrote; SHUTDOWN NOSAVE stops the daemon). The engine is held meanwhile
(``Engine.hold``): no flush freezes the memtable the script writes. What is
not as in Redis: Lua 5.1 cannot yield across a C call, so a script looping
inside a ``pcall`` (or a metamethod) when its budget runs out pauses only once
back in its own frames; until then it keeps the loop. Inside MULTI/EXEC
(already one synchronous step in one batch) and without a server (unit
tests) the script runs on the calling thread to its end. A script's reply,
like any write's, waits for the durability the fsync policy promises.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from memd.commands import COMMANDS, NO_REPLY, Context, Deferred, command, parse_int
from memd.commands.commandtable import DATA_FILE, declare_subcommands, subcommand, table
from memd.errors import CommandError, DurabilityError
from memd.resp import SimpleString
from memd.scripting.convert import error_text
from memd.scripting.runtime import Invocation, LuaState, Script
from memd.scripting.worker import INLINE_SECONDS, Job, Worker

if TYPE_CHECKING:
    from memd.engine.engine import Engine

log = logging.getLogger("memd.script")
OK = SimpleString("OK")
DEFAULT_TIME_LIMIT_MS = 5000
INLINE_BUDGET = 0.005  # seconds a script may run on the event loop itself (see _execute)
NOSCRIPT = "No matching script. Please use EVAL."
BUSY = "Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
_ARITY = {b"load": 3, b"exists": -3, b"flush": -2, b"kill": 2, b"help": 2}
declare_subcommands("script", [s.decode() for s in _ARITY])
_HELP = (
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the scripts cache.",
    "    * SYNC: Synchronously flush the scripts cache.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
)


class Running:
    """The escalated script the server's gate looks at: its deadline and its end."""

    def __init__(self, invocation: Invocation, time_limit_ms: int) -> None:
        import asyncio
        self.invocation = invocation
        self.deadline = invocation.started + time_limit_ms / 1000
        self.ended = asyncio.Event()

    def past_limit(self) -> bool:
        return time.monotonic() >= self.deadline


class Scripting:
    """Per engine: the Lua state and its script cache, the worker thread, the time limit."""

    def __init__(self) -> None:
        self.lua = LuaState(dispatch, _known)
        self.worker = Worker()
        self.time_limit_ms = DEFAULT_TIME_LIMIT_MS
        self.running: Running | None = None
        self.long_running: set[bytes] = set()  # scripts seen past INLINE_BUDGET: always run in the worker
        self.script_ctx: Context | None = None
        self.strikes: dict[bytes, int] = {}
        _noscript_names()  # (built now, not during a script's first run on the loop)

    def overran(self, sha: bytes, seconds: float) -> None:
        """A run on the loop that passed the budget (stopped and moved, or kept: it had written): three in a
        row and the script runs in the worker from the start (one could be a pause of the machine, or a
        first run's cold reads)."""
        strikes = self.strikes[sha] = self.strikes.get(sha, 0) + 1
        if strikes >= 3:
            self.mark_long(sha, seconds)

    def mark_long(self, sha: bytes, seconds: float) -> None:
        if sha not in self.long_running:
            self.long_running.add(sha)
            log.info("script_long sha=%s seconds=%.3f (it runs in the worker thread from now on)", sha.decode(),
                     seconds)

    def context(self, caller: Context) -> Context:
        """The context the script's commands run with (one at a time: one object, refreshed per run)."""
        ctx = self.script_ctx
        if ctx is None or ctx.engine is not caller.engine:
            ctx = self.script_ctx = Context(engine=caller.engine)
        ctx.server, ctx.client_id, ctx.db, ctx.protocol = caller.server, caller.client_id, caller.db, 2
        return ctx


_STATES: weakref.WeakKeyDictionary[Engine, Scripting] = weakref.WeakKeyDictionary()


_last: tuple[Engine | None, Scripting | None] = (None, None)


def scripting(ctx: Context) -> Scripting:
    """The engine's scripting state (one per engine: its Lua state and script cache)."""
    global _last
    engine, state = _last
    if engine is ctx.engine and state is not None:
        return state
    state = _STATES.get(ctx.engine)
    if state is None:
        state = _STATES[ctx.engine] = Scripting()
        if ctx.server is not None:
            state.time_limit_ms = getattr(ctx.server, "lua_time_limit_ms", DEFAULT_TIME_LIMIT_MS)
    _last = (ctx.engine, state)
    return state


def set_time_limit(ctx: Context, ms: int) -> None:
    """CONFIG SET lua-time-limit: scripts started from now on are held that long before -BUSY."""
    scripting(ctx).time_limit_ms = ms
    if ctx.server is not None:
        ctx.server.lua_time_limit_ms = ms


def _known(name: bytes) -> bool:
    return name.lower() in COMMANDS


_noscript: frozenset[bytes] = frozenset()
_noscript_containers: frozenset[bytes] = frozenset()  # commands with a noscript subcommand (script, client...)
_noscript_for = -1  # the size of the command table _noscript was built from
# commands that act on the server's connections or the WAL's settings, which belong to the event
# loop's thread: refused to a script running in the worker thread (on the loop they run as usual)
_LOOP_ONLY = frozenset({b"client", b"config", b"publish", b"spublish"})
# not writes, but Redis refuses them to read-only scripts too (its may-replicate commands)
_MAY_REPLICATE = frozenset({b"publish", b"spublish"})


def _noscript_names() -> frozenset[bytes]:
    """Commands Redis (or memd's own table) flags ``noscript``, and subcommands (``script|flush``)."""
    global _noscript, _noscript_containers, _noscript_for
    if _noscript_for != len(COMMANDS):  # (again if a module registered more since)
        _noscript_for = len(COMMANDS)
        names = {name.encode() for name, meta in table().items() if "noscript" in meta.flags}
        with open(DATA_FILE) as f:
            for entry in json.load(f)["commands"].values():
                info = entry["info"]
                for sub in info[9] if len(info) > 9 and isinstance(info[9], list) else ():
                    if any(flag.get("+") == "noscript" for flag in sub[2]["~"]):
                        names.add(sub[0].encode())
        _noscript = frozenset(names)
        _noscript_containers = frozenset(name.partition(b"|")[0] for name in names if b"|" in name)
    return _noscript


def dispatch(invocation: Invocation, argv: list[bytes]) -> tuple[Any, bool]:
    """Run one ``redis.call`` (Redis's scriptCall): (reply, False), or (error text, True) when refused."""
    name = argv[0].lower()
    cmd = COMMANDS.get(name)
    if cmd is None:
        return b"Unknown Redis command called from script", True
    n = len(argv)  # (arity_ok, inline: every redis.call's path)
    if n != cmd.arity if cmd.arity >= 0 else n < -cmd.arity:
        return b"Wrong number of args calling Redis command from script", True
    noscript = _noscript if _noscript_for == len(COMMANDS) else _noscript_names()
    if name in noscript or (n > 1 and name in _noscript_containers and name + b"|" + argv[1].lower() in noscript):
        return b"This Redis command is not allowed from script", True
    if invocation.in_worker and name in _LOOP_ONLY:
        return b"This Redis command is not allowed from script", True
    if invocation.read_only and name in _MAY_REPLICATE:
        return b"Write commands are not allowed from read-only scripts.", True
    ctx = invocation.ctx
    if cmd.write:
        if invocation.read_only:
            return b"Write commands are not allowed from read-only scripts.", True
        if not invocation.dirty:
            try:
                ctx.engine.check_writable()
            except CommandError as exc:
                return b"-" + error_text(exc), True
        invocation.dirty = True
    try:
        reply = cmd.handler(ctx, argv[1:])
    except CommandError as exc:
        return exc, False
    if reply is NO_REPLY or isinstance(reply, Deferred):
        return b"This Redis command is not allowed from script", True
    return reply, False


# ---- EVAL and friends -----------------------------------------------------------------------

@command("eval", -3)
def eval_(ctx: Context, args: list[bytes]) -> Any:
    return _eval(ctx, args, by_sha=False, read_only=False)


@command("evalsha", -3)
def evalsha(ctx: Context, args: list[bytes]) -> Any:
    return _eval(ctx, args, by_sha=True, read_only=False)


@command("eval_ro", -3)
def eval_ro(ctx: Context, args: list[bytes]) -> Any:
    return _eval(ctx, args, by_sha=False, read_only=True)


@command("evalsha_ro", -3)
def evalsha_ro(ctx: Context, args: list[bytes]) -> Any:
    return _eval(ctx, args, by_sha=True, read_only=True)


def _eval(ctx: Context, args: list[bytes], *, by_sha: bool, read_only: bool) -> Any:
    numkeys = parse_int(args[1])
    if numkeys > len(args) - 2:
        raise CommandError("Number of keys can't be greater than number of args")
    if numkeys < 0:
        raise CommandError("Number of keys can't be negative")
    state = scripting(ctx)
    if by_sha:
        script = state.lua.scripts.get(args[0].lower()) if len(args[0]) == 40 else None
        if script is None:
            raise CommandError(NOSCRIPT, prefix="NOSCRIPT")
    else:
        script = state.lua.load(args[0])
    flags = script.flags
    if flags is not None and "no-writes" not in flags:  # a script that declared it may write
        if read_only:
            raise CommandError("Can not execute a script with write flag using *_ro command.")
    invocation = Invocation(
        ctx=state.context(ctx),
        sha=script.sha, read_only=read_only or (flags is not None and "no-writes" in flags),
        allow_oom=flags is not None and "allow-oom" in flags)
    keys, argv = args[2:2 + numkeys], args[2 + numkeys:]
    return _execute(ctx, state, script, invocation, keys, argv)


def _execute(ctx: Context, state: Scripting, script: Script, invocation: Invocation, keys: list[bytes],
             argv: list[bytes]) -> Any:
    engine = ctx.engine
    server = ctx.server
    lua = state.lua
    if server is None or engine.in_batch:  # unit tests, or inside EXEC's batch: run here, to the end
        if engine.in_batch:
            return lua.run(invocation, script, keys, argv)
        engine.begin_batch()
        try:
            return lua.run(invocation, script, keys, argv)
        finally:
            engine.end_batch()
    if script.sha in state.long_running:  # known to run long: in the worker from the start
        engine.begin_batch()
        return _in_worker(ctx, server, state, invocation, lambda: lua.start(invocation, script, keys, argv))
    # on the event loop first (no thread hop: most scripts take microseconds); past INLINE_BUDGET the
    # script pauses, written or not, and goes on in the worker thread from where it is
    invocation.budget_at = invocation.started + INLINE_BUDGET
    engine.begin_batch()
    try:
        done, reply = lua.start(invocation, script, keys, argv)
    except BaseException:
        engine.end_batch()
        raise
    if done:
        engine.end_batch()
        if state.strikes:
            state.strikes.pop(script.sha, None)  # only overruns in a row count
        return reply
    seconds = time.monotonic() - invocation.started
    log.info("script_to_worker sha=%s ms=%.1f dirty=%s (past the event loop's budget: it goes on in the worker "
             "thread)", script.sha.decode(), seconds * 1000, invocation.dirty)
    state.overran(script.sha, seconds)
    return _in_worker(ctx, server, state, invocation, lambda: lua.resume(invocation))


def _in_worker(ctx: Context, server: Any, state: Scripting, invocation: Invocation,
               step: Callable[[], tuple[bool, Any]]) -> Any:
    """Run (or go on with) the script in the worker thread, inside the batch the caller began; past a few
    milliseconds free the loop (see the module doc)."""
    engine = ctx.engine
    invocation.in_worker = True
    lua = state.lua

    def to_the_end() -> Any:
        done, reply = step()
        while not done:  # (no budget in the worker: only a pause asked before it got here)
            done, reply = lua.resume(invocation)
        return reply

    job = Job(to_the_end)
    state.worker.submit(job)
    try:
        finished = job.wait_inline(INLINE_SECONDS)
    except BaseException:
        job.done.wait()
        engine.end_batch()
        raise
    if finished:
        engine.end_batch()
        return job.outcome()
    # a long script: free the loop, hold everything else (memd.server answers -BUSY past the limit)
    running = Running(invocation, state.time_limit_ms)
    state.running = running
    server.script = running
    engine.hold()

    async def finish() -> Any:
        lsn_before = engine.last_lsn
        try:
            await job.wait()
        finally:
            engine.end_batch()
            engine.release()
            state.running = None
            server.script = None
            running.ended.set()
        reply = job.outcome()
        if engine.last_lsn != lsn_before:
            try:
                await engine.wait_durable()
            except DurabilityError as exc:
                return exc
        return reply

    return Deferred(finish)


# ---- SCRIPT -----------------------------------------------------------------------------------

@command("script", -2)
def script_(ctx: Context, args: list[bytes]) -> Any:
    sub = subcommand("script", args, _ARITY, ctx)
    state = scripting(ctx)
    if sub == b"load":
        return state.lua.load(args[1]).sha
    if sub == b"exists":
        return [1 if sha.lower() in state.lua.scripts else 0 for sha in args[1:]]
    if sub == b"flush":
        if len(args) > 2 or (len(args) == 2 and args[1].lower() not in (b"sync", b"async")):
            raise CommandError("SCRIPT FLUSH only support SYNC|ASYNC option")
        state.lua.flush()
        return OK
    if sub == b"kill":
        return kill(state)
    return [SimpleString(line) for line in _HELP]


def kill(state: Scripting) -> Any:
    """SCRIPT KILL (reached only while a script runs past its limit; otherwise the server held it)."""
    running = state.running
    if running is None:
        raise CommandError("No scripts in execution right now.", prefix="NOTBUSY")
    if running.invocation.dirty:
        raise CommandError("Sorry the script already executed write commands against the dataset. You can either "
                           "wait the script termination or kill the server in a hard way using the SHUTDOWN "
                           "NOSAVE command.", prefix="UNKILLABLE")
    running.invocation.killed = True
    return OK


def stop_script(ctx: Context, nosave: bool) -> None:
    """SHUTDOWN while a script runs past its limit: Redis answers -BUSY unless NOSAVE; with it the script
    is stopped, and one that wrote is abandoned (Engine.abandon: none of its writes survive the exit)."""
    running = scripting(ctx).running
    if running is None:
        return
    if not nosave:
        raise busy_error()
    invocation = running.invocation
    if invocation.dirty:
        log.warning("script_abandoned sha=%s (SHUTDOWN NOSAVE: its writes are dropped)", invocation.sha.decode())
        ctx.engine.abandon()
    invocation.killed = True


def busy_error() -> CommandError:
    return CommandError(BUSY, prefix="BUSY")


def allowed_while_busy(argv: list[bytes]) -> bool:
    """What a client may run while a script is past its limit: SCRIPT KILL, SHUTDOWN (see stop_script)
    and the connection-level commands Redis flags allow_busy (none of which touches the engine)."""
    name = argv[0].lower()
    if name == b"script":
        return len(argv) == 2 and argv[1].lower() == b"kill"
    return name in (b"auth", b"hello", b"multi", b"discard", b"quit", b"reset", b"unwatch", b"shutdown")
