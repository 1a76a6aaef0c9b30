"""Durability against real process death: SIGKILL, and a simulated power loss.

A child process (``child_writer``) writes with 8 concurrent tasks and prints
an ack line only after ``wait_durable`` returned. We SIGKILL it at a random
moment, restart the engine on the same directory and check:

- every acknowledged SET, batch and list push is there (``always`` and
  ``everysec``: a killed process loses nothing — the OS has the bytes);
- every batch is all-or-nothing (never 1..4 of its 5 keys);
- after a *simulated power loss* (WAL files cut back to what was fsynced,
  files whose creation no directory fsync covered deleted), ``always`` still
  has every ack and ``everysec`` lost at most the last ~second.

The SQLite file is left as it was at the kill: it is written only by the
flush, whose commit runs with synchronous=FULL before any WAL segment it
covers is deleted, so what the kill left of it is what a power cut leaves.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time

import anyio
import pytest

from memd.engine.engine import Engine
from tests.crash.recording_fileops import simulate_power_loss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


class Acks:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, float]] = []


def run_and_kill(data_dir: str, fsync: str, seed: int, run_for: float, sidelog: str | None = None
                 ) -> tuple[list[tuple[str, str, float]], float]:
    """Start a writer child, let it run ``run_for`` s after it is ready, SIGKILL it."""
    args = [sys.executable, "-m", "tests.crash.child_writer", data_dir, fsync, str(seed)]
    if sidelog:
        args.append(sidelog)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    acks: list[tuple[str, str, float]] = []
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.endswith("\n"):
                break  # a line cut by the kill is not an ack
            parts = line.split()
            if parts == ["ready"]:
                ready.set()
            elif parts and parts[0] == "ack":
                acks.append((parts[1], parts[2], float(parts[3])))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert ready.wait(30), "child writer did not start"
        # a loaded machine may be slow to fsync: kill only once some writes were acknowledged
        deadline = time.monotonic() + 30
        while len(acks) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(run_for)
    finally:
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
    return acks, killed_at


def verify(data_dir: str, must_have: list[tuple[str, str, float]]) -> dict[str, int]:
    """Open the engine (recovery) and check acks; return counts of what was checked."""
    async def check() -> dict[str, int]:
        async with Engine(data_dir) as engine:
            ks = engine.keyspace
            lists: dict[str, list[bytes]] = {}
            for kind, ident, _ in must_have:
                if kind == "set":
                    assert ks.get(f"k:{ident}".encode()) == (ident * 20).encode(), f"acked SET {ident} lost"
                elif kind == "batch":
                    for j in range(5):
                        assert ks.get(f"b:{ident}:{j}".encode()) == ident.encode() * 3, f"acked batch {ident} lost"
                else:
                    wid = ident.split("-")[0]
                    if wid not in lists:
                        lists[wid] = ks.lrange(f"list:{wid}".encode(), 0, -1)
                    assert ident.encode() in lists[wid], f"acked push {ident} lost"
            # all-or-nothing: group every batch key present by its batch id
            groups: collections.Counter[str] = collections.Counter()
            after = None
            while True:
                keys, after = ks.scan(after, 1000)
                for k in keys:
                    if k.startswith(b"b:"):
                        groups[k.decode().split(":")[1]] += 1
                if after is None:
                    break
            partial = {g: n for g, n in groups.items() if n != 5}
            assert not partial, f"batches applied in part: {partial}"
            return {"acks": len(must_have), "batches_present": len(groups)}
    return anyio.run(check)


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_sigkill_loses_no_acknowledged_write(tmp_path: object, fsync: str) -> None:
    rng = random.Random(f"kill-{fsync}")
    data_dir = os.path.join(str(tmp_path), "data")
    all_acks: list[tuple[str, str, float]] = []
    for round_ in range(3):  # kill, recover in the next child, write more, kill again
        acks, _ = run_and_kill(data_dir, fsync, rng.randrange(1 << 30), rng.uniform(0.3, 1.2))
        assert acks, f"round {round_}: the child acknowledged nothing"
        all_acks += acks
        verify(data_dir, all_acks)


@pytest.mark.parametrize("round_", range(3))
@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_power_loss_keeps_what_the_policy_promises(tmp_path: object, fsync: str, round_: int) -> None:
    rng = random.Random(f"power-{fsync}-{round_}")
    data_dir = os.path.join(str(tmp_path), "data")
    sidelog = os.path.join(str(tmp_path), "sync.log")
    acks, killed_at = run_and_kill(data_dir, fsync, rng.randrange(1 << 30), rng.uniform(1.5, 2.5), sidelog)
    assert acks
    with open(sidelog) as f:  # (every segment may have been flushed and deleted at the kill: nothing to cut)
        assert any(line.startswith("created ") for line in f), "the recording file layer saw no WAL file"
    simulate_power_loss(sidelog)
    if fsync == "always":
        must = acks
    else:
        # everysec: a power loss may cost the last second (plus scheduling slack)
        must = [a for a in acks if a[2] < killed_at - 2.0]
    result = verify(data_dir, must)
    assert result["acks"] == len(must)
