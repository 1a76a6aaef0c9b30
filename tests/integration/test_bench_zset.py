"""benchmarks/bench_zset.py keeps working: a small run measures both servers in every row.

Not a performance test (the machine is shared; the 1 ms target is judged at 1,000,000 members
by the script itself): what is asserted is that both redis-server and memd loaded the set and
answered every query, that every row prints four figures, and that no temp dir is left behind.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_zset.py")
ROWS = ("ZRANGEBYSCORE min +inf LIMIT 0 10", "ZREVRANGEBYSCORE max -inf LIMIT 0 10",
        "ZRANGE min +inf BYSCORE LIMIT 0 10", "ZCOUNT over ~1,000 members", "ZRANK random member")


@pytest.mark.timeout(300)
def test_small_run() -> None:
    before = set(glob.glob("/tmp/bz-*"))
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, SCRIPT, "--members", "2000", "--queries", "30", "--changes", "100"],
                         capture_output=True, text=True, timeout=280, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "redis: loaded" in out.stdout and "memd: loaded" in out.stdout and "flushed to SQLite" in out.stdout
    for row in ROWS:
        lines = [line for line in out.stdout.splitlines() if line.startswith(row)]
        assert len(lines) == 2, f"{row!r}: one line per stage (SQLite, buffered):\n{out.stdout}"
        for line in lines:
            figures = re.findall(r"\s(\d+)(?=\s|$)", line[len(row):])
            assert len(figures) >= 4, f"four figures (redis p50/p99, memd p50/p99) in {line!r}"
    assert set(glob.glob("/tmp/bz-*")) == before, "the benchmark removes its temp dirs"
