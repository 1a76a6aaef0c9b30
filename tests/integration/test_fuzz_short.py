"""Short coverage-guided fuzz runs of both targets, as the long run makes them (benchmarks/fuzz.py).

Why a subprocess: atheris's ``Fuzz()`` exits the process when it is done,
and memd's modules must be instrumented before anything imports them. A
fixed libFuzzer seed keeps the inputs repeatable; the report's counters
show that each invariant was really exercised, not only that nothing failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def fuzz(tmp_path: Path, target: str, runs: int, *extra: str) -> dict[str, int]:
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz.py"), "--target", target, "--runs",
                           str(runs), "--seed", "1", "--report", str(report), "--artifacts", str(tmp_path), *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert not list(tmp_path.glob("crash-*")), proc.stderr[-4000:]
    result: dict[str, int] = json.loads(report.read_text())
    assert result["inputs"] == runs and result["crashes"] == 0, result
    return result


def test_resp_parser_short_fuzz(tmp_path: Path) -> None:
    result = fuzz(tmp_path, "resp", 4000)
    assert result["round_trips_checked"] > 100, result  # inputs that parsed, re-encoded and parsed again
    assert result["protocol_errors"] > 100, result  # and inputs the parser refused


def test_dispatch_short_fuzz(tmp_path: Path) -> None:
    result = fuzz(tmp_path, "dispatch", 2500, "--check-every", "50", "--restart-every", "1000")
    assert result["replies_checked"] > 1000, result
    assert result["owner_checks"] >= 2500 // 50, result
    assert result["restarts"] == 2, result  # recovery replayed the fuzzer's writes twice; own:* survived
    assert result["closed_by_protocol_error"] > 0 and result["connections_opened"] > 10, result
    assert result["leaked_connections"] == result["leaked_tasks"] == result["wrong_owner_reads"] == 0, result
