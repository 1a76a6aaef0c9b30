"""The thread scripts run in, and the hand-off between it and the event loop.

A script must be one atomic step, yet a long one must not freeze the server:
past ``lua-time-limit`` other clients are answered ``-BUSY`` and SCRIPT KILL
must get through. So a script runs in this thread while the loop waits for
it. Most scripts take microseconds: the loop first waits for the job in
place, blocking, for at most :data:`INLINE_SECONDS` (the GIL is released
meanwhile, so the worker runs). A job still running then is *escalated*:
the loop goes back to serving sockets (holding every other command, see
memd.server) and an asyncio future tells it when the job ends.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

INLINE_SECONDS = 0.002


class Job:
    """One call to run in the worker; its outcome is read on the loop thread."""

    __slots__ = ("fn", "result", "error", "done", "lock", "finished", "escalated", "loop", "future")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.finished = False
        self.escalated = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop thread, which re-raises it
            self.error = exc
        with self.lock:
            self.finished = True
            escalated = self.escalated
        self.done.set()
        if escalated:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    def wait_inline(self, timeout: float) -> bool:
        """Block (GIL released) until the job ends or ``timeout``; False: it goes on, now escalated."""
        if self.done.wait(timeout):
            return True
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.finished:
                return True
            self.loop = loop
            self.future = loop.create_future()
            self.escalated = True
        return False

    async def wait(self) -> None:
        """After :meth:`wait_inline` said False: until the job ends."""
        assert self.future is not None
        await asyncio.shield(self.future)

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Worker:
    """One daemon thread running jobs in order (scripts never overlap: the engine is held by one)."""

    def __init__(self, name: str = "memd-script") -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put(job)

    def _loop(self) -> None:
        while True:
            self._queue.get().run()
