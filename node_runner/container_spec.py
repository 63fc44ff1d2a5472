"""How an NPU container is created: every hardening option in one place.

The result is the keyword arguments of ``docker.containers.create``; it is pure so
that a unit test can read every option, and the integration tests check from
inside a node that the kernel really applied them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Protocol

from docker.types import LogConfig, Ulimit

NPU_UID = 10001
ROLE_LABEL = "flowkit.role"
ROLE_NPU = "npu"
# On NPUs started ahead of their node by the warm pool; the value names their profile.
POOL_LABEL = "flowkit.pool"
# On NPUs started for one node of one pipeline (node_runner.dedicated_npus).
DEDICATED_LABEL = "flowkit.dedicated"
# Largest file a node may write (in /tmp, the only writable place): the tmpfs size
# caps the total, this caps each file so a single write fails early and clearly.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_OPEN_FILES = 256
# Under gVisor the container's pids cgroup also counts the sandbox itself: about 40
# threads of its kernel at rest, and (on the ptrace platform) a host stub process
# and thread for each of the node's own processes and threads. Without this
# allowance a node that forks six children brings its NPU down (exit code 2),
# found by the attack suite; with it a fork bomb is still bounded on the host.
# /dev/shm (the container's own tmpfs, nosuid,nodev,noexec): multiprocessing keeps its
# semaphores there (a page each) and shared_memory its blocks. It is a second writable
# place beside /tmp, so it gets a small fixed size of its own rather than Docker's 64 MiB;
# larger data goes through /tmp. A read-only /dev/shm would break multiprocessing
# (sem_open fails), so it stays writable, and the fork server empties it.
SHM_BYTES = 16 * 1024 * 1024
# Docker's default profile (moby v20.10.24, the engine here) less ptrace,
# process_vm_readv/writev, pidfd_getfd, kcmp and io_uring: the outer layer, applied by
# runc to every process of the NPU, the fork server included. Each execution stacks
# its own filter on top (npu_image/flowkit/_seccomp.py). runsc ignores the profile
# (docs/SECURITY.md): there the in-process filter is the layer.
SECCOMP_PROFILE = Path(__file__).with_name("seccomp") / "npu.json"
RUNSC_PIDS_BASE = 96
RUNSC_PIDS_PER_NODE_PID = 2


class ContainerLimits(Protocol):
    """The limits fixed when a container is created (control_unit.limits.NodeLimits;
    node_runner.warm_pool.PoolProfile for containers started before their node is known)."""

    @property
    def memory_mb(self) -> int: ...
    @property
    def cpus(self) -> float: ...
    @property
    def pids(self) -> int: ...
    @property
    def tmpfs_mb(self) -> int: ...
    @property
    def network(self) -> bool: ...


@functools.cache
def seccomp_profile() -> str:
    """The NPU seccomp profile as the engine takes it in ``security_opt`` (JSON text)."""
    return json.dumps(json.loads(SECCOMP_PROFILE.read_text()), separators=(",", ":"))


def host_pids_limit(pids: int, runtime: str) -> int:
    """The container's pids limit that gives the node ``pids`` of its own."""
    if runtime == "runsc":
        return RUNSC_PIDS_BASE + RUNSC_PIDS_PER_NODE_PID * pids
    return pids


def npu_container_options(
    *,
    image: str,
    limits: ContainerLimits,
    labels: dict[str, str],
    runtime: str,
    network_name: str,
) -> dict[str, Any]:
    memory = f"{limits.memory_mb}m"
    return {
        "image": image,
        "labels": {ROLE_LABEL: ROLE_NPU, **labels},
        # The job travels on stdin; nothing else carries data into the container.
        # (docker-py sets StdinOnce when stdin_open is combined with detach=False,
        # so stdin closes when the runner half-closes the attach socket.)
        "stdin_open": True,
        "detach": False,
        "tty": False,
        "environment": {},
        "user": f"{NPU_UID}:{NPU_UID}",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", f"seccomp={seccomp_profile()}"],
        "privileged": False,
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={limits.tmpfs_mb}m,mode=1777"},  # noqa: S108 - inside the NPU
        "network_mode": network_name if limits.network else "none",
        "mem_limit": memory,
        # Equal to mem_limit: no swap, so a memory bomb meets the OOM killer at once.
        "memswap_limit": memory,
        "nano_cpus": int(limits.cpus * 1_000_000_000),
        "pids_limit": host_pids_limit(limits.pids, runtime),
        "ulimits": [
            Ulimit(name="fsize", soft=MAX_FILE_BYTES, hard=MAX_FILE_BYTES),
            Ulimit(name="nofile", soft=MAX_OPEN_FILES, hard=MAX_OPEN_FILES),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "ipc_mode": "private",
        "shm_size": SHM_BYTES,
        "hostname": "npu",
        # Frames may carry node outputs (and so secrets); never write them to a host log.
        "log_config": LogConfig(type=LogConfig.types.NONE),
        "runtime": runtime,
        "volumes": {},
        "mounts": [],
    }
