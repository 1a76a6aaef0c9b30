"""A minimal Debian 12 booted with ``systemd-nspawn -b``: systemd as PID 1 for the unit's tests.

Why a container and not the host: CI machines run no systemd, and the unit's promises (ready
``STATUS=``, watchdog restarts, the seccomp filter, socket activation, a clean stop) only hold
under a real service manager. ``debootstrap`` builds the root file system once (about a minute or
three from Debian's package registry); it is cached under ``ROOTFS_CACHE`` by a hash of what went
into it, and every boot runs on a tmpfs overlay (``--volatile=overlay``), so the cache is never
written to and nothing outlives a test.

Without systemd on the host, nspawn needs ``--register=no --keep-unit`` (no machined, no scope
unit); the container is driven with ``nsenter -t <its PID 1> -a``. ``--private-network`` gives it a
loopback of its own. pip inside may not reach its registry: wheels are downloaded on the host and
installed with ``--no-index`` through the container's ``/etc/pip.conf``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOTFS_CACHE = Path(os.environ.get("MEMD_TEST_ROOTFS_CACHE", "/var/cache/memd-test-rootfs"))
SUITE = "bookworm"  # Debian 12: systemd 252, Python 3.11.2
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus",
    "procps",  # /bin/kill, which memd.service's ExecReload= runs
    "sudo",  # systemd/README.md's steps are run as written, sudo included
    "python3", "python3-venv",  # the README's virtualenv in /opt/memd
    "redis-tools",  # redis-cli, as the README's agent check uses it
)
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBOOTSTRAP_TIMEOUT_S = 600
MISSING_TOOLS = ("the systemd-as-PID-1 test needs {tool}: on Debian, "
                 "`apt-get install debootstrap systemd-container` (.ci/run does)")


def tool(name: str) -> str:
    """A host tool's path, /usr/sbin included (debootstrap lives there; a user's PATH may lack it).

    Missing, it fails (never skips): a skipped test would hide a broken unit.
    """
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise AssertionError(MISSING_TOOLS.format(tool=name))
    return found


def require_tools() -> None:
    for name in ("debootstrap", "systemd-nspawn", "nsenter", "chroot"):
        tool(name)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _locked_build(final: Path, build: Callable[[Path], None]) -> Path:
    """Build ``final`` once: under a lock, into a scratch directory renamed into place when complete."""
    ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
    with open(f"{final}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent run waits here for the same build
        if final.exists():
            return final
        scratch = final.with_name(f"{final.name}.partial")
        shutil.rmtree(scratch, ignore_errors=True)  # left by an interrupted build
        build(scratch)
        scratch.rename(final)
    return final


def rootfs() -> Path:
    """The cached Debian root file system, built by debootstrap on first use."""
    final = ROOTFS_CACHE / f"debian-{SUITE}-{_key(SUITE, 'minbase', MIRROR, sorted(PACKAGES))}"

    def build(scratch: Path) -> None:
        cmd = [tool("debootstrap"), "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(scratch), MIRROR]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S,
                                  env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"debootstrap took over {DEBOOTSTRAP_TIMEOUT_S} s: {' '.join(cmd)}") from exc
        if done.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        subprocess.run([tool("chroot"), str(scratch), "apt-get", "clean"], capture_output=True, timeout=60)

    return _locked_build(final, build)


def wheels() -> Path:
    """memd's dependencies (and setuptools, its build backend) as wheels for the container's Python.

    Downloaded on the host for CPython 3.11 on manylinux x86_64 and cached by the dependency list.
    pip evaluates markers for the host's Python (3.11.7 here): redis-py's
    ``async-timeout; python_full_version < "3.11.3"`` is added by hand for Debian's 3.11.2.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = sorted(project["project"]["dependencies"]) + list(project["build-system"]["requires"])
    reqs.append("async-timeout>=4.0.3")
    final = ROOTFS_CACHE / f"wheels-{_key(reqs)}"

    def build(scratch: Path) -> None:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_12_x86_64",
               "--platform", "manylinux2010_x86_64", "-d", str(scratch), *reqs]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise AssertionError(f"downloading wheels failed ({done.returncode}):\n{done.stderr[-3000:]}")

    return _locked_build(final, build)


def checkout_copy(dest: Path) -> Path:
    """The working tree as ``git`` sees it (tracked and new files, nothing ignored: no build output)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True, timeout=30).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


class Container:
    """One booted container: started by :meth:`boot`, always ended by :meth:`close` (by the pids it started)."""

    def __init__(self, root: Path, log: Path, binds: Sequence[tuple[Path, str]] = (),
                 ro_binds: Sequence[tuple[Path, str]] = ()) -> None:
        self.root, self.log, self.binds, self.ro_binds = root, log, list(binds), list(ro_binds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0  # the container's PID 1, as the host numbers it

    def boot(self, timeout: float = 90) -> None:
        cmd = [tool("systemd-nspawn"), "--quiet", "-D", str(self.root), "--volatile=overlay", "--register=no",
               "--keep-unit", "--private-network", "--console=passive",
               f"--machine=memd-test-{os.getpid()}",  # nspawn keeps per-machine state in /run: one name per run
               "-b",
               *(f"--bind={host}:{inside}" for host, inside in self.binds),
               *(f"--bind-ro={host}:{inside}" for host, inside in self.ro_binds)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.leader:
            self._check_alive()
            self.leader = self._find_leader()
            if time.monotonic() > deadline:
                raise AssertionError(f"no PID 1 in the container after {timeout} s: {self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        while True:  # systemd's private socket answers once it is up; --wait then waits for the boot
            state = self.sh("systemctl is-system-running --wait", timeout=timeout, check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"the container did not boot in {timeout} s (state {state!r}): "
                                     f"{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")

    def _find_leader(self) -> int:
        """nspawn's descendant that is PID 1 in its own pid namespace."""
        assert self.proc is not None
        parents: dict[int, int] = {}
        nspid: dict[int, list[str]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            parents[int(entry)] = int(fields.get("PPid", "0"))
            nspid[int(entry)] = fields.get("NSpid", "").split()
        for pid, ids in nspid.items():
            if len(ids) > 1 and ids[-1] == "1":
                p = pid
                while p > 1:
                    p = parents.get(p, 0)
                    if p == self.proc.pid:
                        return pid
        return 0

    def sh(self, script: str, *, user: str | None = None, timeout: float = 60, check: bool = True,
           env: dict[str, str] | None = None, cwd: str = "/") -> subprocess.CompletedProcess[str]:
        """Run ``sh -c script`` inside the container (as root, or as ``user`` via runuser)."""
        base = {"PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", **(env or {})}
        argv = ["sh", "-c", f"cd {cwd} && {script}"]
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        cmd = [tool("nsenter"), "-t", str(self.leader), "-a", "env", "-i", *(f"{k}={v}" for k, v in base.items()), *argv]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"in the container, `{script}` took over {timeout} s: "
                                 f"{exc.stdout!r} {exc.stderr!r}") from exc
        if check and done.returncode != 0:
            raise AssertionError(f"in the container, `{script}` exited {done.returncode}:\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def close(self) -> None:
        """Power off (SIGTERM to nspawn); SIGKILL the container's PID 1 and nspawn if that hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            pass
        for pid in (self.leader, self.proc.pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)  # PID 1 of a pid namespace takes the namespace with it
                except ProcessLookupError:
                    pass
        self.proc.wait(timeout=20)
