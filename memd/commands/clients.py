"""CLIENT: ID SETNAME GETNAME SETINFO INFO LIST KILL REPLY NO-EVICT NO-TOUCH PAUSE UNPAUSE UNBLOCK HELP, as Redis 7.0.

CLIENT LIST / INFO lines carry Redis 7.0's fields in its order (then
7.2's lib-name and lib-ver, which memd records with CLIENT SETINFO), so
clients that parse them (redis-py's ``client_list``, dashboards) find what
they expect. Figures memd does not keep per connection (query buffer,
output buffer sizes) are 0; the address of a Unix socket client is
``<socket path>:0`` as in Redis. A client with a pub/sub subscription is of
type ``pubsub`` (flag ``P``, its counts in sub= psub= ssub=), every other of
type ``normal``; all are user ``default`` (memd has no replicas and one user).

CLIENT KILL closes other connections through the server
(:meth:`ServerView.kill_client`); a connection that kills itself gets its
reply first, as Redis's CLOSE_AFTER_REPLY does.
"""

from __future__ import annotations

import time
from typing import Any

from memd.commands import NO_REPLY, Context, command, parse_int
from memd.commands.commandtable import declare_subcommands, subcommand
from memd.errors import CommandError
from memd.resp import SimpleString, Verbatim

OK = SimpleString("OK")
_ARITY = {b"id": 2, b"info": 2, b"list": -2, b"setname": 3, b"getname": 2, b"setinfo": 4, b"kill": -3,
          b"reply": 3, b"no-evict": 3, b"no-touch": 3, b"pause": -3, b"unpause": 2, b"unblock": -3,
          b"help": 2}
declare_subcommands("client", [s.decode() for s in _ARITY])
_TYPES = {b"normal", b"master", b"slave", b"replica", b"pubsub"}
_HELP = (
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <LIB-NAME|LIB-VER> <value>",
    "    Set client meta attr.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
    "HELP",
    "    Prints this help.",
)


def client_name(raw: bytes) -> bytes | None:
    """A CLIENT SETNAME / HELLO SETNAME argument: printable, no spaces; "" clears the name."""
    if any(c <= 32 or c > 126 for c in raw):
        raise CommandError("Client names cannot contain spaces, newlines or special characters.")
    return raw or None


def _text(ctx: Context, text: str) -> Any:
    """CLIENT LIST / INFO: a verbatim string in RESP3, a bulk string in RESP2."""
    return Verbatim(text) if ctx.protocol == 3 else text.encode()


def _contexts(ctx: Context) -> list[Context]:
    server = ctx.server
    return sorted(server.contexts(), key=lambda c: c.client_id) if server is not None else [ctx]


def _addr(ctx: Context) -> str:
    server = ctx.server
    return f"{server.socket_path if server is not None else ''}:0"


def client_line(c: Context) -> str:
    """One CLIENT LIST line: Redis 7.0's fields (catClientInfoString), then lib-name and lib-ver."""
    now = time.monotonic()
    created = c.created or now
    subs = c.subscriptions
    sub, psub, ssub = (len(subs.channels), len(subs.patterns), len(subs.shard_channels)) if subs is not None \
        else (0, 0, 0)
    flags = ("P" if sub or psub or ssub else "") + ("x" if c.multi is not None else "") + \
        ("b" if c.blocked else "") + "U" + ("e" if c.no_evict else "") + ("T" if c.no_touch else "")
    multi_mem = sum(sum(len(a) for a in args) for _, args in c.multi) if c.multi is not None else 0
    addr = _addr(c)
    return (f"id={c.client_id} addr={addr} laddr={addr} fd={c.fd} name={(c.name or b'').decode(errors='replace')} "
            f"age={int(now - created)} idle={int(now - (c.last_active or created))} flags={flags} "
            f"db={getattr(c, 'db', 0)} sub={sub} psub={psub} ssub={ssub} "
            f"multi={len(c.multi) if c.multi is not None else -1} "
            f"qbuf=0 qbuf-free=0 argv-mem=0 multi-mem={multi_mem} rbs=0 rbp=0 obl=0 oll=0 omem=0 "
            f"tot-mem={multi_mem} events=r cmd={c.last_cmd.decode(errors='replace')} user=default redir=-1 "
            f"resp={c.protocol} lib-name={c.lib_name.decode(errors='replace')} "
            f"lib-ver={c.lib_ver.decode(errors='replace')}")


def _type(c: Context) -> bytes:
    """Redis's client type: ``pubsub`` while it has a subscription, else ``normal`` (no replicas here)."""
    return b"pubsub" if c.subscriptions is not None and c.subscriptions.total else b"normal"


def _on_off(raw: bytes) -> bool:
    arg = raw.lower()
    if arg not in (b"on", b"off"):
        raise CommandError("syntax error")
    return arg == b"on"


@command("client", -2)
def client(ctx: Context, args: list[bytes]) -> Any:
    sub = subcommand("client", args, _ARITY, ctx)
    if sub == b"id":
        return ctx.client_id
    if sub == b"setname":
        ctx.name = client_name(args[1])
        return OK
    if sub == b"getname":
        return ctx.name
    if sub == b"setinfo":
        return _setinfo(ctx, args[1], args[2])
    if sub == b"info":
        return _text(ctx, client_line(ctx) + "\n")
    if sub == b"list":
        return _text(ctx, "".join(client_line(c) + "\n" for c in _list(ctx, args[1:])))
    if sub == b"kill":
        return _kill(ctx, args[1:])
    if sub == b"reply":
        mode = args[1].lower()
        if mode == b"on":
            ctx.reply = "on"
            return OK
        if mode == b"off":
            ctx.reply = "off"
        elif mode == b"skip":
            if ctx.reply != "off":
                ctx.reply = "skip_next"
        else:
            raise CommandError("syntax error")
        return NO_REPLY  # the server sends nothing for OFF and SKIP
    if sub == b"no-evict":
        ctx.no_evict = _on_off(args[1])
        return OK
    if sub == b"no-touch":
        ctx.no_touch = _on_off(args[1])
        return OK
    if sub == b"pause":
        return _pause(ctx, args[1:])
    if sub == b"unpause":
        if ctx.server is not None:
            ctx.server.unpause()
        return OK
    if sub == b"unblock":
        return _unblock(ctx, args[0], args[1:])
    return [SimpleString(line) for line in _HELP]


def _pause(ctx: Context, opts: list[bytes]) -> Any:
    """CLIENT PAUSE timeout [WRITE|ALL]: the server holds the commands (the caller's later ones too)."""
    if len(opts) > 2:  # Redis's CLIENT falls through to its last branch here
        raise CommandError("unknown subcommand or wrong number of arguments for 'pause'. Try CLIENT HELP.")
    all_commands = True
    if len(opts) == 2:
        mode = opts[1].lower()
        if mode not in (b"write", b"all"):
            raise CommandError("CLIENT PAUSE mode must be WRITE or ALL")
        all_commands = mode == b"all"
    milliseconds = parse_int(opts[0], "timeout is not an integer or out of range")
    if milliseconds < 0:
        raise CommandError("timeout is negative")
    if ctx.server is not None:
        ctx.server.pause(milliseconds, all_commands)
    return OK


def _unblock(ctx: Context, sub: bytes, opts: list[bytes]) -> Any:
    """CLIENT UNBLOCK id [TIMEOUT|ERROR]: 1 if that client was parked by a blocking command (it gets
    its timeout reply, or -UNBLOCKED), else 0. Redis checks the reason before the id."""
    if len(opts) > 2:
        raise CommandError(f"unknown subcommand or wrong number of arguments for '{sub.decode(errors='replace')}'. "
                           "Try CLIENT HELP.")
    error = False
    if len(opts) == 2:
        reason = opts[1].lower()
        if reason not in (b"timeout", b"error"):
            raise CommandError("CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
        error = reason == b"error"
    client_id = parse_int(opts[0])
    return int(ctx.server is not None and ctx.server.unblock_client(client_id, error))


def _setinfo(ctx: Context, attr: bytes, value: bytes) -> Any:
    """CLIENT SETINFO LIB-NAME|LIB-VER value (Redis 7.2; redis-py and others send it at connect)."""
    name = attr.lower()
    if name not in (b"lib-name", b"lib-ver"):
        raise CommandError(f"Unrecognized option '{attr.decode(errors='replace')}'")
    if any(c < 33 or c > 126 for c in value):
        raise CommandError(f"{name.decode()} cannot contain spaces, newlines or special characters.")
    if name == b"lib-name":
        ctx.lib_name = value
    else:
        ctx.lib_ver = value
    return OK


def _list(ctx: Context, opts: list[bytes]) -> list[Context]:
    """CLIENT LIST [TYPE type | ID id [id ...]]: the ID form keeps the order asked, once per id found."""
    if len(opts) == 2 and opts[0].lower() == b"type":
        if opts[1].lower() not in _TYPES:
            raise CommandError(f"Unknown client type '{opts[1].decode(errors='replace')}'")
        kind = opts[1].lower()
        return [c for c in _contexts(ctx) if _type(c) == kind]
    if len(opts) > 1 and opts[0].lower() == b"id":
        by_id = {c.client_id: c for c in _contexts(ctx)}
        out = []
        for raw in opts[1:]:
            found = by_id.get(parse_int(raw, "Invalid client ID"))
            if found is not None:
                out.append(found)
        return out
    if opts:
        raise CommandError("syntax error")
    return _contexts(ctx)


def _kill(ctx: Context, opts: list[bytes]) -> Any:
    """CLIENT KILL addr (old form: OK or an error) or CLIENT KILL <filter value>... (the number killed)."""
    addr = laddr = None
    client_id, kind, skipme = 0, b"", True
    if len(opts) == 1:
        addr, skipme = opts[0].decode(errors="replace"), False  # the old form may kill the caller
    else:
        i = 0
        while i < len(opts):
            opt, more = opts[i].lower(), i + 1 < len(opts)
            if not more:
                raise CommandError("syntax error")
            value = opts[i + 1]
            if opt == b"id":
                client_id = parse_int(value, "client-id should be greater than 0")
                if client_id < 1:
                    raise CommandError("client-id should be greater than 0")
            elif opt == b"type":
                kind = value.lower()
                if kind not in _TYPES:
                    raise CommandError(f"Unknown client type '{value.decode(errors='replace')}'")
            elif opt == b"addr":
                addr = value.decode(errors="replace")
            elif opt == b"laddr":
                laddr = value.decode(errors="replace")
            elif opt == b"user":
                if value != b"default":
                    raise CommandError(f"No such user '{value.decode(errors='replace')}'")
            elif opt == b"skipme":
                if value.lower() not in (b"yes", b"no"):
                    raise CommandError("syntax error")
                skipme = value.lower() == b"yes"
            else:
                raise CommandError("syntax error")
            i += 2
    killed = 0
    for c in _contexts(ctx):
        if (addr is not None and _addr(c) != addr) or (laddr is not None and _addr(c) != laddr):
            continue
        if kind and kind != _type(c) or client_id and c.client_id != client_id:
            continue
        if c is ctx and skipme:
            continue
        if c is ctx:
            ctx.quit = True  # closed once this reply is out
        elif ctx.server is not None:
            ctx.server.kill_client(c)
        killed += 1
    if len(opts) == 1:
        if not killed:
            raise CommandError("No such client")
        return OK
    return killed
