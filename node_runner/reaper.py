"""Find and remove NPU containers that no runner is driving any more."""

from __future__ import annotations

import contextlib

import docker.errors

from node_runner.container_spec import ROLE_LABEL, ROLE_NPU
from node_runner.docker_engine import engine


def reap_npu_containers(*, include_running: bool = False) -> list[str]:
    """Remove stopped NPU containers (and running ones too with include_running).

    Running ones are only safe to remove when no worker on this engine is alive,
    e.g. at worker start-up after a crash.
    """
    removed: list[str] = []
    # sparse: the listing's own state, without an inspect per container that would
    # race with runners removing their containers right now.
    npus = engine().containers.list(all=True, sparse=True, filters={"label": f"{ROLE_LABEL}={ROLE_NPU}"})
    for container in npus:
        if container.status in ("running", "paused") and not include_running:
            continue
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
            removed.append(container.short_id)
    return removed
