"""benchmarks/bench_vectors.py keeps working: a --quick run measures every side and every row.

Not a performance test (the machine is shared, and timed targets are only judged at the stated size):
what is asserted is that every side ran (memd over RESP, MemdStore, and both LangGraph baselines), that
each prints a figure in each of its rows, that the size-independent targets (recall, k results under a
FILTER) pass and the replies checked clean, and that no daemon or temp dir is left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_vectors.py")
NUM = r"[\d,]+(?:\.\d+)?"
SIDES = ("memd", "MemdStore", "InMemoryStore", "SqliteStore+sqlite-vec")


def _row(out: str, label: str) -> list[str]:
    """The cells of the table row starting with label (label itself excluded)."""
    m = re.search(rf"^{re.escape(label)}\s+(.*)$", out, re.MULTILINE)
    assert m, f"no row {label!r} in:\n{out}"
    return m[1].split()


def _serving(pid: int, d: str) -> bool:
    """Process pid is still the daemon of dir d (not a later process that reuses the pid)."""
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and any(a.startswith(d) for a in p.cmdline())
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(180)
def test_quick_run_measures_every_side() -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--n", "1000", "--queries", "10"], cwd=ROOT,
                          capture_output=True, text=True, timeout=170, env=env)
    out = proc.stdout
    assert proc.returncode == 0, f"rc {proc.returncode}\n{out}\n{proc.stderr[-4000:]}"
    assert re.search(r"^bench_vectors \d{4}-\d\d-\d\d .*; command: python3 benchmarks/bench_vectors.py --quick .*; "
                     r"commit \w+; load average ", out, re.MULTILINE), out

    # every LangGraph-API row has a figure on all four sides; hybrid, flush and restart are memd's alone
    for label in ("ingest, memories/s (batches of 500)", "KNN over all p50, ms", "KNN over all p99, ms",
                  "KNN under a 10% prefix p99, ms", "KNN + FILTER keeping 1% p99, ms"):
        cells = _row(out, label)
        assert all(re.fullmatch(NUM, c) for c in cells[:4]), f"{label}: {cells}\n{out}"
        assert all(re.fullmatch(NUM + "x", c) for c in cells[4:6]), f"{label}: {cells}\n{out}"
    for label in ("hybrid QUERY + VECTOR p99, ms", "MEMD.FLUSH after ingest, s",
                  "restart: first KNN answer after, s", "  of which loading the vectors (log), s"):
        assert re.fullmatch(NUM, _row(out, label)[0]), out
    recalls = [[float(c) for c in cells[:4]] for cells in
               (m[1].split() for m in re.finditer(r"^  recall@10 vs exact\s+(.*)$", out, re.MULTILINE))]
    assert len(recalls) == 3, out
    assert all(r >= 0.95 for row in recalls for r in row), out  # exact at this size: a lower figure is a bug
    assert re.search(r"recall@10 >= 0\.95 .*\s+PASS$", out, re.MULTILINE), out
    assert re.search(r"FILTER keeping 1%: still k=10 results .*\s+0\s+PASS$", out, re.MULTILINE), out
    for side in SIDES:
        assert f"{side}: every reply checked, no problems" in out, out
    assert "NOT MEASURED" not in out, out
    assert out.rstrip().endswith("RESULT: OK"), out

    daemons = [(int(m[1]), m[2]) for m in re.finditer(r"^  daemon pid (\d+), dir (\S+)$", out, re.MULTILINE)]
    assert len(daemons) == 3, out  # memd, memd again after the restart, MemdStore's
    dirs = {d for _, d in daemons} | set(re.findall(r"^  worker dir (\S+)$", out, re.MULTILINE))
    assert len(dirs) == 3, out
    for pid, d in daemons:
        if _serving(pid, d):
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the benchmark left its daemon (pid {pid}) running")
    assert not [d for d in dirs if os.path.exists(d)], f"the benchmark left temp dirs: {dirs}"
