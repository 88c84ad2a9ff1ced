"""A single-node SLURM cluster on this machine for the tests: munge, slurmctld and slurmd.

Debian's packages (``slurmctld slurmd slurm-client munge``) are installed with apt-get when
missing and this process is root; otherwise the cluster is unavailable and :func:`cluster`
says why (the caller skips with that reason). Everything else lives in a temporary
directory: a generated munge key and socket, a localhost ``slurm.conf`` (the node's CPUs
and memory as ``slurmd -C`` reports them, free ports, no accounting database), state, spool
and logs. The daemons are started daemonised with pid files and stopped by those pids.
Commands reach the cluster through ``SLURM_CONF`` in the returned environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")


class Unavailable(RuntimeError):
    """SLURM cannot run here; the message says why."""


def install() -> None:
    """Install the Debian packages if a binary is missing (root and apt-get needed)."""
    if all(shutil.which(b) for b in BINARIES):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"SLURM is not installed and cannot be installed here (needs root and apt-get): {' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise Unavailable(f"`{' '.join(args)}` failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise Unavailable(f"installed {' '.join(PACKAGES)} but {missing} are still missing")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_line() -> str:
    """``CPUs=.. RealMemory=..`` of this machine, from ``slurmd -C``."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True, timeout=60).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return f"CPUs={fields['CPUs']} RealMemory={fields['RealMemory']}"


def _wait_for(what: str, ready, logs: list[Path], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-1500:] if p.exists() else '(none)'}" for p in logs)
            raise Unavailable(f"{what} did not come up within {timeout:.0f} s\n{tails}")
        time.sleep(0.2)


def _stop(pid_file: Path) -> None:
    if not pid_file.is_file():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (ValueError, IndexError, ProcessLookupError):
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextmanager
def cluster() -> Iterator[dict[str, str]]:
    """Start a one-node cluster in a temporary directory; yields the environment that reaches
    it: the variables to add (``SLURM_CONF``). Raises :class:`Unavailable`. Stops the daemons and removes the directory."""
    install()
    # munged wants every directory above its socket searchable by all: not under pytest's 0700 tmp_path
    base = Path(tempfile.mkdtemp(prefix="landscape-slurm-"))
    base.chmod(0o755)
    munge = base / "munge"
    munge.mkdir(mode=0o755)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for sub in ("state", "spool", "log"):
        (base / sub).mkdir()
    socket_path = munge / "munge.socket"
    pids = {"munged": munge / "munged.pid", "slurmctld": base / "slurmctld.pid", "slurmd": base / "slurmd.pid"}
    logs = [munge / "munged.log", base / "log" / "slurmctld.log", base / "log" / "slurmd.log"]
    host = socket.gethostname().split(".")[0]
    ctld_port, d_port = _free_ports(2)
    conf = base / "slurm.conf"
    conf.write_text(f"""\
ClusterName=landscape
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={base / 'state'}
SlurmdSpoolDir={base / 'spool'}
SlurmctldPidFile={pids['slurmctld']}
SlurmdPidFile={pids['slurmd']}
SlurmctldLogFile={logs[1]}
SlurmdLogFile={logs[2]}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 {_node_line()} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    extra = {"SLURM_CONF": str(conf)}
    env = dict(os.environ, **extra)
    try:
        try:
            subprocess.run(["munged", f"--key-file={key}", f"--socket={socket_path}", f"--pid-file={pids['munged']}",
                            f"--log-file={logs[0]}", f"--seed-file={munge / 'munged.seed'}"],
                           check=True, timeout=60, capture_output=True, text=True)
            subprocess.run(["slurmctld", "-i"], env=env, check=True, timeout=60, capture_output=True, text=True)
            subprocess.run(["slurmd"], env=env, check=True, timeout=60, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            raise Unavailable(f"{exc.cmd[0]} did not start ({exc.returncode}): {exc.stderr}") from exc

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30, check=False).stdout
            return out.strip() == "idle"

        _wait_for("the SLURM node", idle, logs)
        yield extra
    finally:
        for name in ("slurmd", "slurmctld", "munged"):
            _stop(pids[name])
        shutil.rmtree(base, ignore_errors=True)
