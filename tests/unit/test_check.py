"""`memd check`: offline verification of a data directory."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from memd.cli import main
from memd.engine.engine import Engine, lock_data_dir
from memd.engine.wal import list_segments


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _write(data_dir: str, n: int, flush: bool) -> None:
    async with Engine(data_dir, flush_max_records=1 << 30, flush_max_age=3600) as engine:
        for i in range(n):
            engine.keyspace.set(b"k%d" % i, b"v" * 50)
        await engine.wait_durable()
        if flush:
            await engine.flush()
        engine.flush_max_age = 3600
        # leave without the final flush: the WAL holds the rest
        engine._flush_all = _noop  # type: ignore[method-assign]


async def _noop() -> None:
    return None


@pytest.mark.anyio
async def test_check_healthy_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "data")
    await _write(d, 100, flush=True)
    await _write(d, 10, flush=False)
    assert main(["check", "--data-dir", d]) == 0
    out = capsys.readouterr().out
    assert "integrity ok" in out and "check: ok" in out
    assert "10 records newer than the flushed LSN" in out


@pytest.mark.anyio
async def test_check_reports_torn_tail_without_repairing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "data")
    await _write(d, 20, flush=False)
    path = list_segments(os.path.join(d, "wal"))[-1][1]
    size = os.path.getsize(path)
    os.truncate(path, size - 5)
    assert main(["check", "--data-dir", d]) == 1
    out = capsys.readouterr().out
    assert "torn tail" in out and path in out
    assert os.path.getsize(path) == size - 5, "check must not modify the data directory"


@pytest.mark.anyio
async def test_check_reports_mid_log_corruption(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "data")
    await _write(d, 20, flush=False)
    path = list_segments(os.path.join(d, "wal"))[-1][1]
    with open(path, "r+b") as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0x01]))
    assert main(["check", "--data-dir", d]) == 1
    assert "PROBLEM wal:" in capsys.readouterr().out


def test_check_refuses_a_directory_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "data")
    fd = lock_data_dir(d)
    try:
        assert main(["check", "--data-dir", d]) == 2
        assert "in use by another memd process" in capsys.readouterr().err
    finally:
        os.close(fd)


def test_second_engine_on_same_directory_refuses(tmp_path: Path) -> None:
    from memd.errors import DataDirLockedError

    async def go() -> None:
        async with Engine(str(tmp_path)):
            with pytest.raises(DataDirLockedError, match="in use by another memd process"):
                async with Engine(str(tmp_path)):
                    pass
    anyio.run(go)


def test_check_of_a_missing_directory_fails_and_creates_nothing(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "typo"
    assert main(["check", "--data-dir", str(d)]) == 1
    assert "is not a directory" in capsys.readouterr().err and not d.exists()
