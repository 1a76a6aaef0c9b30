"""An Engine on an event loop in a portal thread, for the hypothesis state machines.

The state machines drive the engine from hypothesis's (synchronous) thread;
every engine call goes through ``portal.call`` so it runs on the loop
thread, as commands do. Restarts are clean (final flush) or crash-like (no
final flush: the next open replays the WAL).
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any

from anyio.from_thread import start_blocking_portal

from memd.engine.engine import Engine

START_S = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand (expiry, history age)."""

    def __init__(self) -> None:
        self.now = START_S

    def __call__(self) -> float:
        return self.now


class EngineHarness:
    """Mixin for a RuleBasedStateMachine: ``self.engine``, ``self.portal``, ``self.clock``."""

    ENGINE_OPTIONS: dict[str, Any] = {}

    def start_engine(self, prefix: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.clock = Clock()
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        self.restarts = 0
        self._open()

    def _open(self) -> None:
        self.engine = self.portal.call(functools.partial(Engine, self.tmp.name, clock=self.clock,
                                                         **self.ENGINE_OPTIONS))
        # entered and exited in one task of the loop, as `async with` would be
        self._engine_cm = self.portal.wrap_async_context_manager(self.engine)
        self._engine_cm.__enter__()
        self.opened()

    def opened(self) -> None:
        """Hook: configure a freshly opened engine."""

    def _close(self, crash: bool) -> None:
        if crash:
            async def no_final_flush() -> None:
                pass
            self.engine._flush_all = no_final_flush  # type: ignore[method-assign]
        self._engine_cm.__exit__(None, None, None)

    def reopen(self, crash: bool) -> None:
        self.restarts += 1
        self._close(crash)
        self._open()

    def teardown(self) -> None:
        try:
            self._close(crash=False)
        finally:
            self._portal_cm.__exit__(None, None, None)
            self.tmp.cleanup()
