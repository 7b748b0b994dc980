"""A private Open vSwitch: ovsdb-server + ovs-vswitchd with every file in one directory.

What: :class:`PrivateOvs` creates a fresh database in its run directory, starts ovsdb-server
and ovs-vswitchd there (pidfiles, unix sockets and logs all under it, the system instance in
/var/run/openvswitch never touched), wraps ``ovs-vsctl``, ``ovs-ofctl`` and ``ovs-appctl``
for it, and stops exactly the two daemons it started. Both users of a real OVS share it:
the OVS-DPDK speed peer (``bench/ovs_dpdk.py``: the DPDK build of ovs-vswitchd under
``taskset``) and the per-packet oracle of the tests (``tests/support/oracle``: the dummy
datapath, ``--enable-dummy=override``).

Design: the daemons detach themselves (``--detach``) and write pidfiles; a pid is recorded
only after /proc shows that it runs the program we started with our run directory on its
command line. The ``OVS_*DIR`` variables point at the run directory, so any tool run
through :meth:`PrivateOvs.run` talks to this instance. Stopping asks each daemon to exit
(``ovs-appctl exit``), then sends SIGTERM, then SIGKILL, waiting a little after each;
vswitchd goes first, so it can release what it holds (DPDK memory) while its database is
still up.

Invariants: only pids recorded from our own pidfiles, re-checked against /proc just before
signalling, are ever signalled; nothing outside the run directory is written (callers add
their own resources, such as DPDK's runtime directory, and clean them up themselves).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
PKGDATADIR = "/usr/share/openvswitch"
DAEMON_FLAGS = ("-vconsole:off", "--detach", "--no-chdir")
STOP_WAIT_S = 5.0


class OvsError(RuntimeError):
    """An OVS command failed or a daemon did not stay up."""


def pid_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd living in ``rundir``; :meth:`stop` stops both by pid."""

    def __init__(self, rundir: str | os.PathLike, cmd_timeout: float = 60.0):
        self.rundir = Path(rundir)
        self.cmd_timeout = cmd_timeout
        self.db_sock = self.rundir / "db.sock"
        self.ctl = self.rundir / "ovs-vswitchd.ctl"
        self.pids: dict[str, int] = {}  # daemon name -> pid
        self._programs: dict[str, str] = {}  # daemon name -> program started
        d = str(self.rundir)
        self.env = dict(os.environ, OVS_RUNDIR=d, OVS_DBDIR=d, OVS_LOGDIR=d, OVS_SYSCONFDIR=d,
                        OVS_PKGDATADIR=PKGDATADIR)  # fmt: skip
        self.env["PATH"] = self.env.get("PATH", "") + ":/usr/sbin:/usr/bin"

    # -- commands ---------------------------------------------------------------------------
    def run(self, argv, check: bool = True, timeout: float | None = None) -> str:
        """Run one OVS tool against this instance; its stdout (OvsError if it fails)."""
        argv = [str(a) for a in argv]
        try:
            done = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                  timeout=timeout or self.cmd_timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            if check:
                raise OvsError(f"{' '.join(argv)}: timed out") from None
            return ""
        if check and done.returncode != 0:
            raise OvsError(f"{' '.join(argv)} -> rc={done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def vsctl(self, *words: str, no_wait: bool = False) -> str:
        wait = ["--no-wait"] if no_wait else [f"--timeout={int(self.cmd_timeout)}"]
        return self.run(["ovs-vsctl", f"--db=unix:{self.db_sock}", *wait, *words])

    def ofctl(self, *words: str) -> str:
        return self.run(["ovs-ofctl", *words])

    def appctl(self, *words: str) -> str:
        return self.run(["ovs-appctl", "-t", str(self.ctl), *words])

    # -- life cycle -------------------------------------------------------------------------
    def start_ovsdb(self, schema: str = SCHEMA) -> None:
        """A fresh database from ``schema`` and ovsdb-server on it; ``ovs-vsctl init``."""
        d = self.rundir
        d.mkdir(parents=True, exist_ok=True)
        db = d / "conf.db"
        db.unlink(missing_ok=True)
        self.run(["ovsdb-tool", "create", db, schema])
        self._start("ovsdb-server", ["ovsdb-server", db, f"--remote=punix:{self.db_sock}"])
        self.vsctl("init", no_wait=True)

    def start_vswitchd(self, program: str = "ovs-vswitchd", extra=(), prefix=()) -> None:
        """ovs-vswitchd (``program``: a name or path) on our database, with ``extra``
        arguments, started through ``prefix`` (e.g. ``taskset -c 0``, which execs it)."""
        argv = [*prefix, program, f"unix:{self.db_sock}", *extra]
        self._start("ovs-vswitchd", argv, program)

    def _start(self, name: str, argv, program: str | None = None) -> None:
        d = self.rundir
        pidfile = d / f"{name}.pid"
        pidfile.unlink(missing_ok=True)
        try:
            self.run([*argv, f"--pidfile={pidfile}", f"--unixctl={d}/{name}.ctl",
                      f"--log-file={d}/{name}.log", *DAEMON_FLAGS])  # fmt: skip
        finally:
            if pidfile.exists():  # record it even when the command failed: stop() needs it
                pid = int(pidfile.read_text())
                self._programs[name] = os.path.basename(program or name)
                if not self._ours(pid, self._programs[name]):
                    raise OvsError(f"{name} (pid {pid}) did not stay up; see {d}/{name}.log")
                self.pids[name] = pid

    def _ours(self, pid: int, program: str) -> bool:
        """``pid`` is alive and runs ``program`` with our run directory in its arguments."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return (pid_alive(pid) and os.path.basename(argv[0].decode()) == program
                and any(str(self.rundir).encode() in a for a in argv[1:]))  # fmt: skip

    def alive(self, name: str) -> bool:
        """The daemon ``name`` we started is still running."""
        pid = self.pids.get(name)
        return pid is not None and self._ours(pid, self._programs[name])

    def stop(self) -> list[str]:
        """Stop the daemons this object started (vswitchd first), and nothing else; returns
        the names of those still alive after all that (normally none)."""
        for name in ("ovs-vswitchd", "ovsdb-server"):
            if not self.alive(name):
                continue
            pid = self.pids[name]
            ctl = self.rundir / f"{name}.ctl"
            self.run(["ovs-appctl", "--timeout=5", "-t", ctl, "exit"], check=False, timeout=10)
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and self.alive(name):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        break
                deadline = time.monotonic() + STOP_WAIT_S
                while self.alive(name) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not self.alive(name):
                    break
        return [name for name in self.pids if self.alive(name)]
