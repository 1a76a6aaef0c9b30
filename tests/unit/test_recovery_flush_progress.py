"""Recovery keeps reporting progress while it flushes a WAL bigger than its buffer (systemd must not kill it)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from memd.engine import engine as engine_mod
from memd.engine.engine import DB_NAME, WAL_DIR, Engine
from memd.engine.memtable import Memtable
from memd.engine.records import OP_SET, encode_record, encode_segment_header
from memd.engine.wal import segment_name
from memd.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(60)


class SlowStore(SqliteStore):
    """A flush that takes 0.3 s, as a big one into a big store takes minutes; says when it runs."""

    flushing = False

    async def flush(self, table: Memtable) -> None:
        self.flushing = True
        try:
            await anyio.sleep(0.3)
            await super().flush(table)
        finally:
            self.flushing = False


@pytest.mark.anyio
async def test_recovery_reports_while_it_flushes_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    wal_dir = tmp_path / WAL_DIR
    wal_dir.mkdir()
    data = bytearray(encode_segment_header(1))
    for lsn in range(1, 2501):
        data += encode_record(lsn, [(OP_SET, b"k%d" % lsn, b"v", None)], 1024)
    (wal_dir / segment_name(1)).write_bytes(bytes(data))
    monkeypatch.setattr(engine_mod, "RECOVERY_PROGRESS_SECONDS", 0.05)
    store = SlowStore(str(tmp_path / DB_NAME))
    during: list[int] = []

    def progress(records: int) -> None:
        if store.flushing:
            during.append(records)

    # flush as it goes every 10 x flush_max_records = 1,000 records: two flushes in recovery
    async with Engine(str(tmp_path), flush_max_records=100, recovery_progress=progress, store=store) as engine:
        assert engine.keyspace.get(b"k2500") == b"v"
        assert engine.store.flushed_lsn == 2000
    assert set(during) == {1000, 2000}, during
