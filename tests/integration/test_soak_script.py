"""benchmarks/soak.py keeps working: a few seconds of it sample, summarize and clean up.

Not a performance test: a short run's slopes mean nothing, so only the shape of the output,
the workload's own correctness checks (no wrong or error reply) and the cleanup are asserted;
the verdict's rules are checked on made-up samples.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "soak.py")
SAMPLE_RE = re.compile(r"^\s*\d+\.\d\s+\d+\s+\d+\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+\d+\s", re.MULTILINE)
STARTED_RE = re.compile(r"^daemon pid (\d+), dir (\S+);", re.MULTILINE)


def _gone(pid: int, path: str) -> None:
    """The daemon process and the temp dir no longer exist."""
    assert not os.path.exists(path), f"soak left its temp dir {path}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"soak left the daemon (pid {pid}) running")


@pytest.mark.timeout(120)
def test_short_soak_prints_samples_and_a_verdict(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, SCRIPT, "--minutes", "0.25", "--sample-seconds", "4",
                           "--warmup-minutes", "0", "--rate", "300", "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=110)
    out = proc.stdout
    assert proc.returncode in (0, 1), f"rc {proc.returncode}\n{out}\n{proc.stderr}"
    assert len(SAMPLE_RE.findall(out)) >= 3, out
    summary = re.search(r"^summary over minutes 0\.\.[\d.]+ \((\d+) samples\): ([\d,]+) commands, \d+ compactions, "
                        r"\d+ backups, (\d+) errors, (\d+) wrong replies, (\d+) log errors, daemon exit 0$",
                        out, re.MULTILINE)
    assert summary, out
    assert int(summary[2].replace(",", "")) > 0
    assert (summary[3], summary[4], summary[5]) == ("0", "0", "0"), out
    assert re.search(r"^  anonymous RSS: .* slope [-+][\d.]+ MB / 10 min", out, re.MULTILINE), out
    assert re.search(r"^  fds: \d+ -> \d+", out, re.MULTILINE), out
    assert re.search(r"^RESULT: (PASS|FAIL)", out, re.MULTILINE), out
    started = STARTED_RE.search(out)
    assert started, out
    _gone(int(started[1]), started[2])

    # the saved output can be judged again, with the same samples
    log = tmp_path / "soak.log"
    log.write_text(out)
    again = subprocess.run([sys.executable, SCRIPT, "--from-log", str(log), "--warmup-minutes", "0"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode in (0, 1), again.stdout + again.stderr
    assert f"judging {len(SAMPLE_RE.findall(out))} samples" in again.stdout, again.stdout
    assert f"({summary[1]} samples): {summary[2]} commands" in again.stdout, again.stdout
    assert re.search(r"^RESULT: (PASS|FAIL)", again.stdout, re.MULTILINE), again.stdout


@pytest.mark.timeout(90)
def test_interrupted_soak_stops_the_daemon_and_removes_its_dir() -> None:
    proc = subprocess.Popen([sys.executable, SCRIPT, "--minutes", "5", "--sample-seconds", "2", "--rate", "200",
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        seen = ""
        deadline = time.monotonic() + 60
        while not SAMPLE_RE.search(seen) and time.monotonic() < deadline:  # readline blocks: the timeout bounds it
            chunk = proc.stdout.readline()
            if not chunk:
                break
            seen += chunk
        started = STARTED_RE.search(seen)
        assert started and SAMPLE_RE.search(seen), seen
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, f"rc {proc.returncode}\n{seen}{rest}\n{err}"
    assert "interrupted" in err
    _gone(int(started[1]), started[2])


def _samples(fds: list[int], anon_start: float = 40.0, anon_per_min: float = 0.0) -> list[Any]:
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import soak  # noqa: PLC0415 - benchmarks/ is not a package
    finally:
        sys.path.remove(os.path.dirname(SCRIPT))
    out = []
    for i, n in enumerate(fds):
        minute = 10.0 + i
        out.append(soak.Sample(minute=minute, ops=1000 * (i + 1), errors=0, wrong=0, rss_mb=60.0,
                               anon_mb=anon_start + anon_per_min * i, fds=n, wal_mb=0.0, sqlite_mb=20.0,
                               sqlite_wal_mb=10.0, keys=4800, lag_p50=1.0, lag_p99=10.0, lag_max=20.0,
                               compactions=i, backups=i, fd_kinds=Counter({"socket:[N]": n})))
    return out


def _verdict(samples: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    import soak  # noqa: PLC0415 - imported by _samples

    rc = soak.summarize(samples, 10.0, 0, [])
    return rc, capsys.readouterr().out


def test_verdict_tolerates_fd_jitter_but_not_a_rising_floor(capsys: pytest.CaptureFixture[str]) -> None:
    jitter = [30, 33, 30, 31, 32, 30, 33, 30, 30, 34, 30, 31]  # transient fds, the floor stays at 30
    rc, out = _verdict(_samples(jitter), capsys)
    assert (rc, out.splitlines()[-1]) == (0, "RESULT: PASS"), out
    leak = [30, 33, 30, 31, 32, 31, 33, 31, 32, 34, 32, 33]  # one fd more for good from the middle on
    rc, out = _verdict(_samples(leak), capsys)
    assert rc == 1 and "fd growth" in out and "socket:[N] +2" in out, out


def test_verdict_fails_an_anonymous_rss_slope_over_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _verdict(_samples([30] * 12, anon_per_min=0.1), capsys)  # 1 MB / 10 min
    assert rc == 0, out
    rc, out = _verdict(_samples([30] * 12, anon_per_min=0.25), capsys)  # 2.5 MB / 10 min
    assert rc == 1 and "anonymous RSS slope +2.50 MB / 10 min >= 2" in out, out
