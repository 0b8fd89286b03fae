"""A real single-node Slurm cluster for the tests (Debian's slurm-wlm and munge): munged, slurmctld and slurmd run
in the foreground as children of the test process, with a private configuration, state, socket and logs in one
folder, and are stopped by the process ids started here. Needs root (slurmd launches jobs as their user)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
MUNGE_KEY = Path("/etc/munge/munge.key")


class Unavailable(RuntimeError):
    """Slurm cannot run here; the message says why (the test is skipped with it)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mib() -> int:
    with open("/proc/meminfo") as f:
        kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return kib // 1024 - 1024  # leave the OS a GiB, as slurmd checks RealMemory against what it finds


class LocalSlurm:
    """`with LocalSlurm(folder) as slurm:` a one-node cluster; `slurm.env` is the environment its clients need."""

    def __init__(self, folder: Path, cpus: int | None = None):
        self.dir = Path(folder)
        self.cpus = cpus or os.cpu_count() or 1
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.dir / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _check(self) -> None:
        if os.geteuid() != 0:
            raise Unavailable("a local Slurm needs root (slurmd starts jobs as their user)")
        missing = [d for d in (*DAEMONS, "sbatch", "squeue", "sinfo") if shutil.which(d) is None]
        if missing:
            raise Unavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
        if not MUNGE_KEY.exists():
            raise Unavailable(f"{MUNGE_KEY} missing (the munge package creates it)")

    def _write_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool", "munge"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "munge", 0o700)
        d = self.dir
        self.conf.write_text("\n".join([
            "ClusterName=bench", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={d / 'munge' / 'munge.sock'}",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none", "ReturnToService=2", "SchedulerType=sched/backfill", "SlurmdTimeout=60",
            "MinJobAge=3600",  # keep finished jobs visible to squeue/scontrol while the test reads them
            f"NodeName={host} CPUs={self.cpus} RealMemory={_memory_mib()} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))

    def start(self, timeout: float = 60) -> "LocalSlurm":
        self._check()
        self._write_conf()
        d = self.dir
        commands = {
            "munged": ["munged", "--foreground", "--force", f"--socket={d / 'munge' / 'munge.sock'}",
                       f"--key-file={MUNGE_KEY}", f"--pid-file={d / 'munge' / 'munged.pid'}",
                       f"--log-file={d / 'munged.log'}", f"--seed-file={d / 'munge' / 'munged.seed'}"],
            "slurmctld": ["slurmctld", "-D", "-i", "-f", str(self.conf)],  # -i: ignore any stale state
            "slurmd": ["slurmd", "-D", "-f", str(self.conf)],
        }
        try:
            for name, cmd in commands.items():
                log = open(d / f"{name}.stdout", "w")
                self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
                if name == "munged":
                    self._wait(lambda: (d / "munge" / "munge.sock").exists(), timeout, "munged's socket")
                if name == "slurmctld":
                    self._wait(lambda: self._run("scontrol", "ping").returncode == 0, timeout, "slurmctld")
            self._wait(self._node_idle, timeout, "the node to be idle")
        except Exception:
            self.stop()
            raise
        return self

    def _run(self, *cmd) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=30)

    def _node_idle(self) -> bool:
        out = self._run("sinfo", "-h", "-o", "%t").stdout.split()
        return bool(out) and all(s.rstrip("*") == "idle" for s in out)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise Unavailable(f"{name} exited with status {p.returncode}: {self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.5)
        raise Unavailable(f"timed out after {timeout:.0f} s waiting for {what}: {self.log_tail('slurmctld')} "
                          f"{self.log_tail('slurmd')}")

    def log_tail(self, name: str, chars: int = 600) -> str:
        texts = []
        for path in (self.dir / f"{name}.log", self.dir / f"{name}.stdout"):
            if path.exists():
                texts.append(path.read_text(errors="replace")[-chars:])
        return " | ".join(t.strip().replace("\n", " / ") for t in texts if t.strip())

    def stop(self) -> None:
        """Stops the daemons started here, by their process ids (slurmd first: it owns the job steps)."""
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
