"""Child process for crash tests: writes and prints an ack line per durable write.

Usage: python -m tests.crash.child_writer DATA_DIR FSYNC SEED [SIDELOG]

Concurrent writer tasks each loop: a plain SET, or a MULTI-style batch of
five keys that share one tag, then ``wait_durable`` and only then print
``ack <kind> <id> <unix time>`` (stdout is unbuffered). The parent kills the
process with SIGKILL at a random moment and checks what survived.
"""

from __future__ import annotations

import random
import sys
import time

import anyio

from memd.engine.engine import Engine


async def writer(engine: Engine, wid: int, rng: random.Random) -> None:
    ks = engine.keyspace
    i = 0
    while True:
        i += 1
        ident = f"{wid}-{i}"
        if rng.random() < 0.3:
            with engine.batch():
                for j in range(5):
                    ks.set(f"b:{ident}:{j}".encode(), ident.encode() * 3)
            kind = "batch"
        elif rng.random() < 0.2:
            ks.push(f"list:{wid}".encode(), [ident.encode()], left=False)
            kind = "push"
        else:
            ks.set(f"k:{ident}".encode(), (ident * 20).encode())
            kind = "set"
        await engine.admit()
        await engine.wait_durable()
        sys.stdout.write(f"ack {kind} {ident} {time.time():.3f}\n")
        sys.stdout.flush()
        if rng.random() < 0.1:
            await anyio.sleep(0)


async def main() -> None:
    data_dir, fsync, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fileops = None
    if len(sys.argv) > 4:
        from tests.crash.recording_fileops import RecordingFileOps
        fileops = RecordingFileOps(sys.argv[4])
    rng = random.Random(seed)
    async with Engine(data_dir, fsync=fsync, flush_max_records=rng.choice([50, 500, 5000]),
                      wal_segment_bytes=rng.choice([64 * 1024, 1024 * 1024]), fileops=fileops) as engine:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with anyio.create_task_group() as tg:
            for wid in range(8):
                tg.start_soon(writer, engine, wid, random.Random(seed * 100 + wid))


if __name__ == "__main__":
    anyio.run(main)
