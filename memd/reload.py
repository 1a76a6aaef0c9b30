"""Live config reload: watch the file (and SIGHUP), validate, apply what can change live.

watchfiles watches the config file's *directory* (an editor's atomic rename
would leave a watch on the file itself deaf after the first save), filtered
to the file's name. A new file is validated in full first: an invalid one is
rejected, the config in force stays, and the error is logged and shown in
INFO. Keys that can change live (``config.RELOADABLE``) are applied through
the daemon's ``apply`` callback; the others (socket, data directory...) are
logged as needing a restart and keep their running values.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import watchfiles

from memd import config as config_mod
from memd.config import Config
from memd.errors import ConfigError

log = logging.getLogger("memd.reload")

# apply(config in force after the reload, {dotted key: (old, new)} of what changed live)
Apply = Callable[[Config, dict[str, tuple[Any, Any]]], None]


class Reloader:
    """Reloads on file changes and on :meth:`request` (SIGHUP); INFO reads :meth:`status`."""

    def __init__(self, path: str | None, overrides: Mapping[str, object], current: Callable[[], Config],
                 apply: Apply) -> None:
        self.path = os.path.abspath(path) if path else None
        self.overrides = dict(overrides)
        self.current = current
        self.apply = apply
        self.reloads = 0
        self.last_at = 0.0
        self.last_ok = True
        self.last_error = ""
        self._wanted = anyio.Event()
        self._reason = ""
        # Tells watchfiles' thread to return. Cancelling alone is not enough: the thread is not
        # interruptible, so a cancelled watch would wait for its rust_timeout (5 s) on a quiet directory.
        self._stop_watching = anyio.Event()

    def request(self, reason: str) -> None:
        """Ask for a reload (signal handlers and the file watcher); it runs on the reloader's task."""
        self._reason = reason
        self._wanted.set()

    def reload(self, reason: str) -> bool:
        """Validate and apply the file now; False (old config kept) when it is invalid."""
        self.reloads += 1
        self.last_at = time.time()
        old = self.current()
        try:
            new = config_mod.load(self.path, self.overrides)
        except ConfigError as exc:
            self.last_ok, self.last_error = False, str(exc)
            log.error("config_reload_rejected reason=%s error=%r kept='the config in force'", reason, str(exc))
            return False
        live, restart = config_mod.changes(old, new)
        self.apply(config_mod.in_force(old, new), live)
        self.last_ok, self.last_error = True, ""
        for key, (running, wanted) in restart.items():
            log.warning("config_restart_needed key=%s running=%r file=%r", key, running, wanted)
        log.info("config_reloaded reason=%s applied=%s", reason, ",".join(sorted(live)) or "-")
        return True

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            if self.path is not None:
                await tg.start(self._watch)
            task_status.started()
            try:
                while True:
                    await self._wanted.wait()
                    self._wanted = anyio.Event()
                    self.reload(self._reason)
            finally:  # cancelled (shutdown): the watcher thread sees this within one step (50 ms)
                self._stop_watching.set()

    async def _watch(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        assert self.path is not None
        name = os.path.basename(self.path)
        try:
            watcher = watchfiles.awatch(os.path.dirname(self.path), recursive=False, debounce=200, step=50,
                                        stop_event=self._stop_watching,  # type: ignore[arg-type]
                                        watch_filter=lambda _change, p: os.path.basename(p) == name)
            task_status.started()
            async for _ in watcher:
                self.request("file")
        finally:
            self._stop_watching.set()

    def status(self) -> dict[str, Any]:
        """INFO fields (server section)."""
        return {
            "memd_config_file": self.path or "",
            "memd_config_reloads": self.reloads,
            "memd_config_last_reload": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_at))
            if self.last_at else "",
            "memd_config_last_reload_ok": int(self.last_ok),
            "memd_config_last_error": self.last_error,
        }
