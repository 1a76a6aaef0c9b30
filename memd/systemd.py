"""systemd integration in plain stdlib: sd_notify, the watchdog, socket activation.

Why not a library: the protocol is a datagram of ``KEY=VALUE`` lines sent to
``$NOTIFY_SOCKET`` (a path, or an abstract name when it starts with ``@``);
``sdnotify`` does the same and is unmaintained, ``systemd-python`` needs the
libsystemd headers. Outside systemd every function here is a no-op, so the
daemon calls them unconditionally.

Socket activation (sd_listen_fds(3)): systemd passes listening sockets from
fd 3 on and says how many in ``$LISTEN_FDS``, for the process ``$LISTEN_PID``
(a variable inherited by a child must not make the child take the fds).
memd takes exactly one AF_UNIX stream socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, MutableMapping
from typing import Protocol

from memd.errors import MemdError

log = logging.getLogger("memd.systemd")

LISTEN_FDS_START = 3
NOTIFY_TIMEOUT = 1.0  # seconds: systemd drains its queue at once; never hang the event loop on it
_failing = False  # the last notification could not be sent (logged once until one goes through)
STALL_MIN_SECONDS = 10.0  # a flush is not called stuck sooner, however small WatchdogSec= is


def notify(*lines: str, env: MutableMapping[str, str] = os.environ) -> bool:
    """Send ``lines`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to systemd; False when not under systemd.

    A failed send is logged, not raised: systemd notices a missing READY=1 or
    WATCHDOG=1 by itself (start timeout, watchdog), and the daemon must not
    die because the notification socket went away.
    """
    global _failing
    address = env.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "@/":
        return False  # unset, or a kind (vsock:...) memd does not speak
    if address[0] == "@":
        address = "\0" + address[1:]  # Linux abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(NOTIFY_TIMEOUT)
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as exc:
        if not _failing:  # once, not at every watchdog tick
            log.warning("sd_notify_failed socket=%r error=%r", env.get("NOTIFY_SOCKET"), str(exc))
        _failing = True
        return False
    if _failing:
        log.info("sd_notify_recovered socket=%r", env.get("NOTIFY_SOCKET"))
        _failing = False
    return True


def watchdog_interval(env: MutableMapping[str, str] = os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=, as sd_watchdog_enabled(3) advises), or None.

    None when no watchdog is asked for, or when ``$WATCHDOG_PID`` names
    another process (the variables were inherited, not meant for us).
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000


def listen_socket(env: MutableMapping[str, str] = os.environ) -> socket.socket | None:
    """The listening socket systemd passed us (memd.socket), or None when not socket-activated.

    Takes it once: ``LISTEN_*`` are removed from ``env`` so that nothing
    started later inherits them, and the fd is made close-on-exec. Raises
    MemdError when systemd passed something memd cannot serve.
    """
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = env.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if count != "1":
        raise MemdError(f"systemd passed LISTEN_FDS={count!r} sockets; memd serves exactly one: give memd.socket "
                        "a single ListenStream= line")
    try:
        sock = socket.socket(fileno=LISTEN_FDS_START)
    except OSError:  # not a socket at all
        sock = None
    if sock is None or not _is_unix_listener(sock):
        if sock is not None:
            sock.detach()  # leave the fd as it was: we only refuse it
        raise MemdError(f"fd {LISTEN_FDS_START} from systemd is not a listening AF_UNIX stream socket: use "
                        "ListenStream=/path/to/memd.sock (no Accept=yes) in memd.socket")
    sock.set_inheritable(False)
    return sock


def _is_unix_listener(sock: socket.socket) -> bool:
    return sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM \
        and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


async def watchdog_loop(interval: float, stalled: Callable[[], str | None],
                        send: Callable[..., bool] = notify) -> None:
    """Ping WATCHDOG=1 every ``interval`` seconds while the daemon is healthy; runs until cancelled.

    Health is two things. The event loop is responsive: otherwise this task
    does not run and no ping goes out. And ``stalled()`` returns None; when it
    returns a reason (say, a flush stuck for minutes) pings stop, so systemd
    kills and restarts the daemon after WatchdogSec= — recovery then replays
    the WAL, nothing acknowledged is lost.
    """
    was_stalled = False
    while True:
        reason = stalled()
        if reason is None and was_stalled:
            log.info("watchdog_recovered action=resuming_pings")
            send("WATCHDOG=1", "STATUS=ready: the flush makes progress again")
        elif reason is None:
            send("WATCHDOG=1")
        elif not was_stalled:
            log.error("watchdog_stalled reason=%r action='no more WATCHDOG=1: systemd restarts memd'", reason)
            send(f"STATUS=unhealthy: {reason}")
        was_stalled = reason is not None
        await asyncio.sleep(interval)


class Flushing(Protocol):
    """What the watchdog reads from the engine (memd.engine.Engine has it)."""

    flush_error: str | None

    def flush_stalled(self, seconds: float) -> bool: ...

    def buffered_bytes(self) -> int: ...


def stall_limit(interval: float) -> float:
    """How long flushing may make no progress before memd counts as stuck: one WatchdogSec= (2 intervals).

    Generous on purpose: a false alarm costs a restart and a WAL replay,
    while a real stall only waits one more WatchdogSec= to be restarted.
    """
    return max(2 * interval, STALL_MIN_SECONDS)


def flush_health(engine: Flushing, seconds: float) -> str | None:
    """None while the engine's flush makes progress, else why not (for the log and STATUS=)."""
    if not engine.flush_stalled(seconds):
        return None
    return (f"the flush to SQLite made no progress for over {seconds:g}s "
            f"(buffer_bytes={engine.buffered_bytes()} flush_error={engine.flush_error or '-'})")
