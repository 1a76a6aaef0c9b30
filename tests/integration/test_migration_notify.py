"""A real daemon opening an old-schema store tells systemd it is migrating, and asks for more start time.

The store is small (the test stays fast), so the daemon runs with its report
interval set to zero by a wrapper that sets it and then runs ``memd`` as
``python -m memd`` would: every chance SQLite's progress handler gives is
reported, as a long migration's would be once a second.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

import pytest
import redis

from memd import daemon
from memd.engine.engine import DB_NAME
from tests.integration.test_systemd import NotifyReceiver, Run, daemon_env, ping, runs  # noqa: F401 - fixture
from tests.integration.daemon import short_tmpdir
from tests.unit.old_schema import old_store, string_keys

pytestmark = pytest.mark.timeout(90)

# argv: [wrapper, python, -m, memd, serve, ...] (Run's prefix goes before its python -m memd)
REPORT_AT_EVERY_CHANCE = r"""
import runpy, sys
from memd.store import schema
schema.MIGRATION_PROGRESS_SECONDS = 0.0
schema.PROGRESS_STEPS = 1000
sys.argv = [sys.argv[0], *sys.argv[4:]]
runpy.run_module("memd", run_name="__main__")
"""


def test_daemon_migrating_an_old_store_extends_its_start_timeout(runs: Callable[..., Run]) -> None:
    base = short_tmpdir("memd-n-")
    receiver = NotifyReceiver(os.path.join(base, "notify"))
    try:
        run = runs(daemon_env(NOTIFY_SOCKET=receiver.address))
        os.makedirs(run.data_dir)
        old_store(os.path.join(run.data_dir, DB_NAME), 3, string_keys(20_000))
        run.prefix = [sys.executable, "-c", REPORT_AT_EVERY_CHANCE]
        run.start()
        receiver.wait_for("READY=1", 60, proc=run.proc)
        lines = receiver.lines()
        before = lines[:lines.index("READY=1")]
        migrating = [x for x in before if x.startswith("STATUS=migrating schema ")]
        # the two rebuilds of the keys table: WITHOUT ROWID (v4) and databases (v7)
        assert any(x.startswith("STATUS=migrating schema v3 -> v4, ") for x in migrating), before
        assert any(x.startswith("STATUS=migrating schema v6 -> v7, ") for x in migrating), before
        extend = f"EXTEND_TIMEOUT_USEC={daemon.MIGRATION_EXTEND_USEC}"
        assert before.count(extend) == len(migrating), "each report extends the timeout"
        assert ping(run.socket) == b"+PONG\r\n"
        client = redis.Redis(unix_socket_path=run.socket)
        try:
            assert client.get(b"key:00019999") == b"v" * 100 and client.dbsize() == 20_000
        finally:
            client.close()
        assert run.stop() == 0, run.log()
        assert "schema_migration_done" in run.log()
    finally:
        receiver.close()
        shutil.rmtree(base, ignore_errors=True)
