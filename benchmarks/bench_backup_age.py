"""Encrypted vs plain backups: time, the event loop's worst gap meanwhile, and memory while streaming.

Run: ``python3 benchmarks/bench_backup_age.py`` (from the repo root; ``--keys`` sets the store's size,
``--stream-mib`` the sizes pushed through encrypt/decrypt).

1. A store of ``--keys`` keys (300-byte values, a third random so lz4 has work) is backed up
   plain and encrypted, alternately, ``--rounds`` times each; printed per run: seconds and the
   worst lateness of a 10 ms ticker on the same event loop (what a client would wait).
2. For each ``--stream-mib`` size, a fresh process encrypts then decrypts a random file of that
   size with :mod:`memd.maintenance.backup_age` and reports how much its peak RSS grew over a
   1 MiB warm-up: streaming means it does not grow with the size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio  # noqa: E402
from pyrage import x25519  # noqa: E402

from memd.config import BackupConfig  # noqa: E402
from memd.engine.engine import Engine  # noqa: E402
from memd.maintenance.backup import run_backup  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import resource, sys
from pyrage import x25519
from memd.maintenance import backup_age
src, small = sys.argv[1:3]
ident = x25519.Identity.generate()
keys = [str(ident.to_public())]
backup_age.encrypt(small, small + ".age", keys)
backup_age.decrypt(small + ".age", small + ".out", [ident], {"recipients": keys})
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
before = peak()
backup_age.encrypt(src, src + ".age", keys)
encrypted = peak()
backup_age.decrypt(src + ".age", src + ".out", [ident], {"recipients": keys})
print(encrypted - before, peak() - encrypted)
"""


def random_file(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


async def backups(base: Path, keys: int, rounds: int) -> None:
    recipient = str(x25519.Identity.generate().to_public())
    async with Engine(str(base / "data"), flush_max_records=10**8, flush_max_bytes=1 << 32,
                      buffer_max_bytes=1 << 33) as engine:
        for i in range(keys):
            engine.keyspace.set(b"key:%09d" % i, os.urandom(100) + b"x" * 200)
        await engine.flush()
        for _ in range(rounds):
            for name, recipients in (("plain", ()), ("encrypted", (recipient,))):
                worst = 0.0

                async def tick() -> None:
                    nonlocal worst
                    last = time.perf_counter()
                    while True:
                        await anyio.sleep(0.01)
                        now = time.perf_counter()
                        worst, last = max(worst, now - last - 0.01), now

                cfg = BackupConfig(dir=str(base / name), keep_last=1, age_recipients=recipients)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(tick)
                    s = await run_backup(engine, cfg)
                    tg.cancel_scope.cancel()
                print(f"backup {name:9s} raw {s['bytes'] / 2**20:6.1f} MiB  lz4 "
                      f"{s['compressed_bytes'] / 2**20:5.1f} MiB  {s['seconds']:6.2f} s  "
                      f"worst loop gap {worst * 1000:6.1f} ms", flush=True)


def streaming(base: Path, sizes: list[int]) -> None:
    small = base / "small"
    random_file(small, 1)
    for mib in sizes:
        src = base / "stream"
        random_file(src, mib)
        out = subprocess.run([sys.executable, "-c", PROBE, str(src), str(small)], cwd=ROOT, capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        grew_enc, grew_dec = map(int, out.stdout.split())
        print(f"stream {mib:5d} MiB: peak RSS grew {grew_enc / 2**20:5.1f} MiB encrypting, "
              f"{grew_dec / 2**20:5.1f} MiB decrypting", flush=True)
        for p in (src, *(Path(f"{f}{ext}") for f in (src, small) for ext in (".age", ".out"))):
            p.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stream-mib", type=int, nargs="*", default=[16, 64, 256])
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="memd-bench-age-"))
    try:
        anyio.run(backups, base, args.keys, args.rounds)
        streaming(base, args.stream_mib)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
