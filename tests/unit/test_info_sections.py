"""INFO <section> computes only what it returns (the key counts, the providers' sections, the memory
figures are skipped for the others), and returns what the full INFO shows for that section."""

from __future__ import annotations

from pathlib import Path

import pytest

from memd.commands import Context, load_all
from memd.commands.connection import execute
from memd.commands.server import info_sections
from memd.engine.engine import Engine

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

load_all()

VOLATILE = ("uptime", "used_memory", "memd_loop_lag", "memd_vector_bytes")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fields(text: bytes) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    section: dict[str, str] = {}
    for line in text.decode().split("\r\n"):
        if line.startswith("# "):
            section = out.setdefault(line[2:].lower(), {})
        elif ":" in line:
            k, v = line.split(":", 1)
            section[k] = "?" if k.startswith(VOLATILE) else v
    return out


async def test_each_section_alone_is_the_full_infos(tmp_path: Path) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        ctx = Context(engine=engine)
        execute(ctx, [b"SET", b"k", b"v"])
        full = fields(execute(ctx, [b"INFO"]))
        assert full["keyspace"] == {"db0": "keys=1,expires=0,avg_ttl=0"}
        for name in full:
            assert fields(execute(ctx, [b"INFO", name.encode()])) == {name: full[name]}, name
        both = fields(execute(ctx, [b"INFO", b"clients", b"keyspace"]))
        assert both == {"clients": full["clients"], "keyspace": full["keyspace"]}


async def test_a_section_skips_the_others_costs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Engine(str(tmp_path / "d")) as engine:
        ctx = Context(engine=engine)
        counted: list[int] = []
        for ks in engine.keyspaces:
            real = ks.dbsize
            monkeypatch.setattr(ks, "dbsize", lambda real=real: counted.append(1) or real())
        assert set(info_sections(ctx, only=["clients"])) >= {"clients"} and not counted
        info_sections(ctx, only=["keyspace"])
        assert len(counted) == engine.databases
