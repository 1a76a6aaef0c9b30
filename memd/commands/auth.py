"""AUTH, and the part of ACL a one-user Redis answers: WHOAMI, LIST, USERS, HELP.

memd's first gate is the socket: its file mode and the peer's credentials
(SO_PEERCRED) decide who may connect at all (:mod:`memd.server`). The
optional ``[server] password`` is a second gate, Redis's ``requirepass``:
when it is set, a new connection must AUTH (or HELLO ... AUTH) before any
command but AUTH, HELLO, QUIT and RESET (``-NOAUTH``). Without it memd
answers as a Redis without requirepass: the ``default`` user has no
password, ``AUTH pass`` is an error saying so, ``AUTH default anything``
succeeds.

A password never appears in a reply or a log line: a wrong one is
``-WRONGPASS`` with Redis's fixed text, and AUTH is a known command, so its
arguments are never echoed by the unknown-command error. Comparison is in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from memd.commands import Context, command
from memd.commands.commandtable import declare_subcommands, subcommand
from memd.errors import CommandError
from memd.resp import SimpleString

OK = SimpleString("OK")
USER = b"default"
WRONGPASS = "invalid username-password pair or user is disabled."
_ACL_ARITY = {b"whoami": 2, b"list": 2, b"users": 2, b"help": 2}
declare_subcommands("acl", [s.decode() for s in _ACL_ARITY])
_ACL_NOT_BUILT = {b"cat", b"deluser", b"dryrun", b"genpass", b"getuser", b"load", b"log", b"save", b"setuser"}
_ACL_HELP = (
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LIST",
    "    Show users details in config file format.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Prints this help.",
)


def password(ctx: Context) -> str:
    """The configured password ("" = none): the server's, read per use so that a reload applies at once."""
    server = ctx.server
    return server.password if server is not None else ""


def needs_auth(ctx: Context) -> bool:
    """Whether this connection must authenticate before running commands (Redis's authRequired)."""
    return not ctx.authenticated and bool(password(ctx))


def authenticate(ctx: Context, user: bytes, secret: bytes) -> bool:
    """Check a user and password (AUTH, HELLO AUTH); on success the connection is authenticated."""
    expected = password(ctx)
    ok = user == USER and (not expected or hmac.compare_digest(secret, expected.encode()))
    if ok:
        ctx.authenticated = True
    return ok


@command("auth", -2)
def auth(ctx: Context, args: list[bytes]) -> Any:
    if len(args) > 2:
        raise CommandError("syntax error")
    if len(args) == 1:
        if not password(ctx):
            raise CommandError("AUTH <password> called without any password configured for the default user. "
                               "Are you sure your configuration is correct?")
        user, secret = USER, args[0]
    else:
        user, secret = args
    if not authenticate(ctx, user, secret):
        raise CommandError(WRONGPASS, prefix="WRONGPASS")
    return OK


@command("acl", -2)
def acl(ctx: Context, args: list[bytes]) -> Any:
    if args[0].lower() in _ACL_NOT_BUILT:
        raise CommandError(f"ACL {args[0].decode(errors='replace').upper()} is not supported: memd has one user, "
                           "'default' (peer credentials and [server] password in the config decide access)")
    sub = subcommand("acl", args, _ACL_ARITY, ctx)
    if sub == b"whoami":
        return USER
    if sub == b"users":
        return [USER]
    if sub == b"list":
        secret = password(ctx)
        creds = f"#{hashlib.sha256(secret.encode()).hexdigest()}" if secret else "nopass"
        return [f"user default on {creds} ~* &* +@all".encode()]
    return [SimpleString(line) for line in _ACL_HELP]
