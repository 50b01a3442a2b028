"""A real single-node SLURM cluster for the tests, from Debian's packages: munged with a key of
its own, MariaDB and slurmdbd (submitit reads every job's state from ``sacct``: without
accounting, a job that ends with no result, cancelled or timed out, is waited for forever),
slurmctld and slurmd, each in the foreground, with its config, state and logs in one temporary
folder and on ports of its own. Nothing outside that folder is read or changed, and only the
processes started here are stopped.

``slurm_cluster()`` yields the cluster: the environment that points the SLURM commands (and so
submitit, inside ``mnist-lab``) at it (``SLURM_CONF``), and its partition's name. The session
fixture ``slurm`` starts it once; a test module asks for it with
``pytest_plugins = ["tests.slurm_cluster"]``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.daemons import require, skip_or_fail, start, wait_for

PARTITION = "debug"
NODE = "mnistlab"
PROGRAMS = [
    "munged", "mariadb-install-db", "mariadbd", "slurmdbd", "slurmctld", "slurmd",
    "sbatch", "squeue", "sinfo", "sacct", "scontrol", "scancel",
]  # fmt: skip
INSTALL = (
    "apt-get install --no-install-recommends slurm-wlm slurmdbd munge mariadb-server-core "
    "mariadb-client-core (as root)"
)

COMMON = """\
AuthType=auth/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket={root}/munge.socket,cred_expire=10
SlurmUser=root
"""

SLURMDBD_CONF = (
    COMMON
    + """\
DbdHost={host}
DbdAddr=127.0.0.1
DbdPort={dbd_port}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct
PidFile={root}/slurmdbd.pid
"""
)

SLURM_CONF = (
    COMMON
    + """\
ClusterName=mnistlab
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmdUser=root
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
# For slurmdbd this is the munge socket to use, not a password.
AccountingStoragePass={root}/munge.socket
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# No cgroups (a container may have none to give): processes are tracked by their parents.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmdParameters=config_overrides
# Schedule at once, not on the default minute's tick.
SchedulerParameters=sched_interval=1,bf_interval=1
KillWait=10
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
)


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]  # add to a command's environment: SLURM_CONF
    partition: str


def memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return total_kb // 1024


def start_munged(bins: dict[str, str], root: Path, stack: ExitStack) -> None:
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = root / "munge.socket"
    command = [
        bins["munged"], "--foreground", f"--socket={sock}", f"--key-file={key}",
        f"--pid-file={root / 'munged.pid'}", f"--seed-file={root / 'munged.seed'}",
        f"--log-file={root / 'munged.log'}",
    ]  # fmt: skip
    proc = start(command, root / "munged.out", stack)
    wait_for(sock.exists, "munged", root / "munged.out", (proc,))


def start_mariadb(bins: dict[str, str], root: Path, stack: ExitStack) -> int:
    data = root / "mariadb"
    subprocess.run(
        [bins["mariadb-install-db"], "--no-defaults", f"--datadir={data}", "--user=root",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    command = [
        bins["mariadbd"], "--no-defaults", f"--datadir={data}", "--user=root",
        f"--port={port}", "--bind-address=127.0.0.1", f"--socket={root / 'mariadb.socket'}",
        f"--pid-file={root / 'mariadb.pid'}", "--innodb-buffer-pool-size=32M",
    ]  # fmt: skip
    proc = start(command, root / "mariadb.log", stack)
    wait_for(
        lambda: "ready for connections" in (root / "mariadb.log").read_text(),
        "MariaDB",
        root / "mariadb.log",
        (proc,),
    )
    return port


def sinfo_state(env: dict[str, str], sinfo: str) -> str:
    result = subprocess.run([sinfo, "-h", "-N", "-o", "%T"], env=env, capture_output=True)
    return result.stdout.decode().strip() if result.returncode == 0 else ""


@contextmanager
def slurm_cluster() -> Iterator[Cluster]:
    """Start the cluster; yield it once its node is idle."""
    bins = require(PROGRAMS, "the SLURM tests", INSTALL)
    if os.geteuid() != 0:
        skip_or_fail("the SLURM tests start slurmd, which runs jobs as root: run them as root")
    root = Path(tempfile.mkdtemp(prefix="slurm-"))  # short: munge's socket path must be
    root.chmod(0o755)  # munged wants its socket's folder open to every user
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        start_munged(bins, root, stack)
        values = {
            "root": root,
            "host": socket.gethostname().split(".")[0],
            "db_port": start_mariadb(bins, root, stack),
            "dbd_port": free_port(),
            "ctld_port": free_port(),
            "slurmd_port": free_port(),
            "node": NODE,
            "partition": PARTITION,
            # More than this machine may have (config_overrides): the tests' jobs are small,
            # and run several at once.
            "cpus": max(8, os.cpu_count() or 1),
            "memory": memory_mb(),
        }
        conf = root / "slurm.conf"
        conf.write_text(SLURM_CONF.format(**values))
        dbd_conf = root / "slurmdbd.conf"  # found beside slurm.conf; slurmdbd wants it private
        dbd_conf.touch(mode=0o600)
        dbd_conf.write_text(SLURMDBD_CONF.format(**values))
        for folder in ("state", "spool"):
            (root / folder).mkdir()
        env = {**os.environ, "SLURM_CONF": str(conf)}
        dbd = start([bins["slurmdbd"], "-D"], root / "slurmdbd.log", stack, env)
        wait_for(
            lambda: "slurmdbd version" in (root / "slurmdbd.log").read_text(),
            "slurmdbd",
            root / "slurmdbd.log",
            (dbd,),
        )
        ctld = start([bins["slurmctld"], "-D", "-i"], root / "slurmctld.log", stack, env)
        slurmd = start([bins["slurmd"], "-D", "-N", NODE], root / "slurmd.log", stack, env)
        wait_for(
            lambda: sinfo_state(env, bins["sinfo"]) == "idle",
            "the SLURM node",
            root / "slurmctld.log",
            (dbd, ctld, slurmd),
        )
        stack.callback(cancel_jobs, env, bins, root / "slurmctld.log")
        yield Cluster({"SLURM_CONF": str(conf)}, PARTITION)


def cancel_jobs(env: dict[str, str], bins: dict[str, str], log: Path) -> None:
    """End this cluster's jobs (a failed test's) before its daemons: slurmd's job steps are
    its own processes, not children that stop with it."""
    subprocess.run([bins["scancel"], "--partition", PARTITION], env=env, capture_output=True)

    def empty() -> bool:
        listed = subprocess.run([bins["squeue"], "-h"], env=env, capture_output=True)
        return listed.returncode == 0 and not listed.stdout.strip()

    wait_for(empty, "the cancelled jobs' end", log, timeout=60)


@pytest.fixture(scope="session")
def slurm() -> Iterator[Cluster]:
    """The cluster, started once for the session."""
    with slurm_cluster() as cluster:
        yield cluster
