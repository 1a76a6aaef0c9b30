"""COMMAND and its subcommands (COUNT INFO DOCS LIST GETKEYS GETKEYSANDFLAGS HELP), from the real table.

The data is :mod:`memd.commands.commandtable`'s: Redis 7.0's metadata for
every command memd implements, plus memd's own. Replies are Redis's,
RESP2 and RESP3 (sets and maps keep Redis's order of elements).
"""

from __future__ import annotations

from typing import Any

from memd.commands import Context, command
from memd.commands.commandtable import declare_subcommands, get_keys, lookup, subcommand, table
from memd.commands.keys import glob_match
from memd.errors import CommandError
from memd.resp import SimpleString

_ARITY = {b"count": 2, b"docs": -2, b"getkeys": -3, b"getkeysandflags": -3, b"help": 2, b"info": -2, b"list": -2}
declare_subcommands("command", [s.decode() for s in _ARITY])

_HELP = (
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "GETKEYS <full-command>",
    "    Return the keys from a full Redis command.",
    "GETKEYSANDFLAGS <full-command>",
    "    Return the keys and the access flags from a full Redis command.",
    "HELP",
    "    Prints this help.",
)


@command("command", -1)
def command_(ctx: Context, args: list[bytes]) -> Any:
    if not args:
        return [meta.info for meta in table().values()]
    sub = subcommand("command", args, _ARITY, ctx)
    if sub == b"count":
        return len(table())
    if sub == b"info":
        if len(args) == 1:
            return [meta.info for meta in table().values()]
        return [m.info if (m := lookup(name)) is not None else None for name in args[1:]]
    if sub == b"docs":
        if len(args) == 1:
            return {name: meta.docs for name, meta in table().items()}
        found = [m for name in args[1:] if (m := lookup(name)) is not None]
        return {m.name: m.docs for m in found}
    if sub == b"list":
        return _list(args[1:])
    if sub in (b"getkeys", b"getkeysandflags"):
        keys = get_keys(args[1:])
        return [key for key, _ in keys] if sub == b"getkeys" else [[key, flags] for key, flags in keys]
    return [SimpleString(line) for line in _HELP]


def _list(opts: list[bytes]) -> list[str]:
    """COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]: every name, subcommands too."""
    kind, arg = b"", b""
    i = 0
    while i < len(opts):
        if opts[i].lower() == b"filterby" and len(opts) - 1 - i == 2:
            kind = opts[i + 1].lower()
            if kind not in (b"module", b"aclcat", b"pattern"):
                raise CommandError("syntax error")
            arg = opts[i + 2]
            i += 3
        else:
            raise CommandError("syntax error")
    names: list[str] = []
    for meta in table().values():
        for m in (meta, *meta.subcommands.values()):
            if kind == b"module":
                continue  # memd loads no modules
            if kind == b"aclcat" and "@" + arg.decode(errors="replace").lower() not in m.acl_categories:
                continue
            if kind == b"pattern" and not glob_match(arg.lower(), m.name.encode()):
                continue
            names.append(m.name)
    return names
