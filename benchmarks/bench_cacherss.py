"""RSS with the read cache full: memd's resident memory against the bound its configuration promises.

    python3 benchmarks/bench_cacherss.py                      # 1,000,000 keys, cache 256 MiB, buffer 128 MiB
    python3 benchmarks/bench_cacherss.py --cache-mib 64 --keys 300000

The bound (issue "Reads at memory speed"): RSS with the cache full stays under the
idle RSS + 1.5 x ``[cache] max_bytes`` + the buffer's bound (``[backpressure]
buffer_max_bytes``). Python rarely gives freed memory back to the OS, so the buffer's
high-water mark during the load stays in RSS: that is why the buffer's bound is in it.

Against one fresh ``memd serve --fsync everysec`` (default flush limits) in a temp dir:

1. idle RSS (INFO ``used_memory_rss``) once it answers;
2. a SET pass over ``key:%012d`` 0 .. --keys-1 (200-byte values, 1,000 per write), then
   MEMD.FLUSH: every key is stored, the buffer empty;
3. a GET pass over every key (1,000 per write, each reply checked): each read misses the
   buffer, reads SQLite and fills the cache, which evicts (S3-FIFO) once full. The keys are
   chosen so that they cost more than the cache holds (a 200-byte value costs ~500 bytes
   cached): the cache must end full, or the run fails;
4. RSS, the cache's tracked bytes and entries, and the check.
"""

from __future__ import annotations

import argparse
import signal
import sys

from bench_readpath import VALUE, call, info, pipelined, preload, start
from benchutil import Cleanup, Interrupted, machine_line, memd_build, raise_interrupted, tail

MIB = 1 << 20


def read_all(sock_path: str, keys: int) -> float:
    """GET every key of the range, 1,000 per write; each reply must be the SET pass's value."""
    return pipelined(sock_path, keys, lambda k: b"*2\r\n$3\r\nGET\r\n$16\r\nkey:%012d\r\n" % k,
                     b"$%d\r\n%b\r\n" % (len(VALUE), VALUE), "GET pass")


def rss_parts(pid: int) -> str:
    """RssAnon (the Python heap, SQLite's page cache) and RssFile (mapped files: libraries, and a
    database SQLite maps, which memd's reader no longer does) from /proc: RSS counts both, and only
    the first is memory the OS cannot take back without writing it somewhere."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0]) * 1024
    return ", ".join(f"{k} {v / MIB:,.0f} MiB" for k, v in fields.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys SET then read (default 1,000,000)")
    ap.add_argument("--cache-mib", type=int, default=256, help="[cache] max_bytes in MiB (default 256)")
    ap.add_argument("--buffer-mib", type=int, default=128,
                    help="[backpressure] buffer_max_bytes in MiB (default 128; at least flush.max_bytes, 64)")
    args = ap.parse_args()
    cache, buffer = args.cache_mib * MIB, args.buffer_mib * MIB
    print(machine_line())
    print(f"memd {memd_build()}; {args.keys:,} keys x {len(VALUE)}-byte values; cache {args.cache_mib} MiB, "
          f"buffer bound {args.buffer_mib} MiB")
    cleanup = Cleanup()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupted)
    proc, sock, d = start("cached", cleanup, cache, extra_config=f"[backpressure]\nbuffer_max_bytes = {buffer}\n")
    try:
        idle = int(info(sock)["used_memory_rss"])
        idle_parts = rss_parts(proc.pid)
        seconds = preload(sock, args.keys)
        call(sock, b"MEMD.FLUSH")
        loaded = info(sock)
        loaded_parts = rss_parts(proc.pid)
        print(f"  SET pass {seconds:.1f} s, then MEMD.FLUSH: rss {int(loaded['used_memory_rss']) / MIB:,.0f} MiB, "
              f"({loaded_parts}), buffer {int(loaded['memd_buffer_bytes']) / MIB:,.1f} MiB")
        seconds = read_all(sock, args.keys)
        stats = info(sock)
        full_parts = rss_parts(proc.pid)
    except RuntimeError as e:
        print(f"FAILED: {e}\n--- memd log ---\n{tail(d + '/server.log')}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup.all()
    rss = int(stats["used_memory_rss"])
    cached, limit = int(stats["memd_readcache_bytes"]), int(stats["memd_readcache_limit_bytes"])
    bound = idle + 1.5 * cache + buffer
    print(f"  GET pass {seconds:.1f} s: cache {cached / MIB:,.1f} of {limit / MIB:,.0f} MiB, "
          f"{int(stats['memd_readcache_entries']):,} entries, {int(stats['memd_readcache_evictions']):,} evictions")
    print(f"idle rss {idle / MIB:,.0f} MiB ({idle_parts}); rss with the cache full {rss / MIB:,.0f} MiB "
          f"({full_parts}); bound: idle + 1.5 x "
          f"{args.cache_mib} + {args.buffer_mib} = {bound / MIB:,.0f} MiB "
          f"({rss / bound:.2f} of it)")
    if cached < 0.95 * limit:
        print(f"NOT FULL: the cache ended at {cached / limit:.0%} of its limit (raise --keys)")
        return 1
    verdict = rss <= bound
    print(f"rss with the cache full under idle + 1.5 x max_bytes + the buffer's bound: {'PASS' if verdict else 'FAIL'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
