"""Coverage-guided fuzzing of memd's RESP parser and of command dispatch (atheris / libFuzzer).

Run (from the repo root):

    python3 benchmarks/fuzz.py --target resp --runs 1000000
    python3 benchmarks/fuzz.py --target dispatch --runs 1000000

``resp``: :mod:`tests.fuzz.resp_target` (the parser on arbitrary bytes cut at
arbitrary points: commands, a wait or ProtocolError only; bounded memory;
the same outcome for any cuts and either engine; re-encoding is the identity).
``dispatch``: :mod:`tests.fuzz.dispatch_target` (command sequences from a
grammar of memd's real commands through a real connection handler over a
real engine: one well-formed reply per request, a second client's keys
unchanged, no leaked connection or task).

memd's modules are instrumented for coverage, so libFuzzer keeps the inputs
that reach new branches (and saves them in ``--corpus DIR`` if given). At the
end it prints the inputs tried, the duration, the crashes and each
invariant's counters, as ``key=value`` lines after ``FUZZ RESULT``, and
writes them as JSON with ``--report``. A failed invariant is a crash: the
traceback is printed, the input is saved as ``crash-<sha1>`` in
``--artifacts`` and the exit status is 1. Arguments after ``--`` go
to libFuzzer unchanged (e.g. ``-- -max_total_time=600``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import atheris
except ImportError:  # pragma: no cover - the test extras install it
    sys.exit("benchmarks/fuzz.py needs atheris: python3 -m pip install 'atheris>=3' (in memd's test extras)")


class Target(Protocol):
    name: str
    seeds: tuple[bytes, ...]
    dictionary: tuple[bytes, ...]  # tokens libFuzzer splices into inputs (protocol words, command names)

    def one(self, data: bytes) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def finish(self) -> dict[str, int]: ...


def load_target(name: str, options: argparse.Namespace) -> Target:
    """Import the target with memd's modules instrumented (they must not have been imported before)."""
    assert not any(m == "memd" or m.startswith("memd.") for m in sys.modules), "memd imported before instrumenting"
    with atheris.instrument_imports(include=["memd"]):
        if name == "resp":
            from tests.fuzz.resp_target import RespTarget
            return RespTarget()
        from tests.fuzz.dispatch_target import DispatchTarget
        return DispatchTarget(check_every=options.check_every, restart_every=options.restart_every)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=("resp", "dispatch"), required=True)
    ap.add_argument("--runs", type=int, default=1_000_000, help="inputs to try (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default 1: repeatable)")
    ap.add_argument("--max-len", type=int, default=0,
                    help="longest input in bytes (default: resp 4096; dispatch 1024, a dozen commands)")
    ap.add_argument("--corpus", help="corpus directory to read and extend (default: none, start from the seeds)")
    ap.add_argument("--artifacts", default=".", help="where libFuzzer writes crash-* inputs (default: .)")
    ap.add_argument("--report", help="also write the final figures to this JSON file")
    ap.add_argument("--check-every", type=int, default=50,
                    help="dispatch: the second client reads its keys back every N inputs (default 50)")
    ap.add_argument("--restart-every", type=int, default=20_000,
                    help="dispatch: close every connection and restart the engine every N inputs (default 20,000)")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="stop after this long even if --runs is not reached (so does SIGTERM/SIGINT): the final "
                         "checks still run and the result says how many inputs were tried")
    ap.add_argument("libfuzzer", nargs="*", help="after --: more libFuzzer flags")
    options = ap.parse_args()

    target = load_target(options.target, options)
    max_len = options.max_len or (4096 if options.target == "resp" else 1024)
    # libFuzzer reads the seeds and the dictionary at start: they go in a scratch directory removed at the
    # first input (it exits without returning, so nothing could remove them at the end)
    scratch = tempfile.mkdtemp(prefix=f"memd-fuzz-{options.target}-")
    seeds = []
    for i, seed in enumerate(target.seeds):
        seeds.append(os.path.join(scratch, f"seed-{i}"))
        Path(seeds[-1]).write_bytes(seed)
    dict_path = os.path.join(scratch, "tokens.dict")
    Path(dict_path).write_text("".join('"%s"\n' % "".join(f"\\x{b:02x}" for b in token)
                                       for token in target.dictionary))
    artifacts = os.path.join(os.path.abspath(options.artifacts), "")
    argv = [sys.argv[0], f"-runs={options.runs}", f"-seed={options.seed}", f"-max_len={max_len}",
            f"-artifact_prefix={artifacts}", "-print_final_stats=1", f"-dict={dict_path}",
            f"-seed_inputs={','.join(seeds)}", "-handle_term=0", "-handle_int=0", *options.libfuzzer]
    if options.corpus:  # kept: inputs that reached new code are saved there for the next run
        os.makedirs(options.corpus, exist_ok=True)
        argv.append(options.corpus)

    state: dict[str, Any] = {"inputs": 0, "t0": time.monotonic(), "next_progress": time.monotonic() + 60}

    def result(crashes: int, extra: dict[str, int]) -> dict[str, Any]:
        return {"target": options.target, "inputs": state["inputs"], "requested": options.runs,
                "seconds": round(time.monotonic() - state["t0"], 1), "crashes": crashes, "seed": options.seed,
                "max_len": max_len, **extra}

    def emit(res: dict[str, Any]) -> None:
        print("FUZZ RESULT", flush=True)
        for k, v in res.items():
            print(f"  {k}={v}", flush=True)
        if options.report:
            Path(options.report).write_text(json.dumps(res, indent=1) + "\n")

    deadline = state["t0"] + options.max_seconds if options.max_seconds else float("inf")
    stop_requested: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):  # stop at the next input boundary, with the final checks
        signal.signal(signum, lambda signum, frame: stop_requested.append(signum))

    def one_input(data: bytes) -> None:
        state["inputs"] += 1
        if state["inputs"] == 1:
            shutil.rmtree(scratch, ignore_errors=True)
        try:
            target.one(data)
            if state["inputs"] >= options.runs:  # libFuzzer exits right after this call: finish here
                emit(result(0, target.finish()))
                return
            if stop_requested or time.monotonic() >= deadline:
                emit(result(0, {**target.finish(), "stopped_early": 1}))
                os._exit(0)  # libFuzzer has no way to end a run from inside it
        except BaseException:
            emit(result(1, target.stats()))
            # save the input and exit here: the dispatch target's engine threads would keep the process
            # alive after libFuzzer's own crash exit
            crash = os.path.join(artifacts, "crash-" + hashlib.sha1(data).hexdigest())
            Path(crash).write_bytes(data)
            traceback.print_exc()
            print(f"crash input saved to {crash}", file=sys.stderr, flush=True)
            os._exit(1)
        now = time.monotonic()
        if now >= state["next_progress"]:
            state["next_progress"] = now + 60
            figures = " ".join(f"{k}={v}" for k, v in target.stats().items())
            print(f"progress inputs={state['inputs']} seconds={now - state['t0']:.0f} {figures}", flush=True)

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
