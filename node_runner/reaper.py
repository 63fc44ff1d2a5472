"""Find and remove NPU containers that no runner is driving any more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import docker.errors

from node_runner.container_spec import DEDICATED_LABEL, POOL_LABEL, ROLE_LABEL, ROLE_NPU
from node_runner.docker_engine import engine


def reap_worker_containers(
    worker: str, created_before: float | None = None, *, kept_only: bool = False
) -> list[str]:
    """Remove the NPUs ``worker`` started (on this engine), running or not: the worker
    is lost, or this is its new life and they belong to the old one, or (with
    ``kept_only``) it shut down and the NPUs its processes keep — waiting in their
    pools, or dedicated to a node (a process killed without closing them) — are left.
    With ``created_before`` (a Unix time), only those created before it."""
    removed: list[str] = []
    base = [f"{ROLE_LABEL}={ROLE_NPU}", f"flowkit.worker={worker}"]
    # (A pooled NPU adopted by a node keeps its pool label.)
    selections = [[*base, POOL_LABEL], [*base, DEDICATED_LABEL]] if kept_only else [base]
    for labels in selections:
        for container in engine().containers.list(all=True, sparse=True, filters={"label": labels}):
            # The engine gives whole seconds: a container of the same second is spared.
            if created_before is not None and int(container.attrs.get("Created", 0)) >= int(created_before):
                continue
            if remove_container(container):
                removed.append(container.short_id)
    forget_dedicated(worker=worker, created_before=created_before)
    return removed


def forget_dedicated(*, worker: str | None = None, container_ids: list[str] | None = None,
                     created_before: float | None = None) -> None:  # fmt: skip
    """Delete the DedicatedNpu rows of NPUs that are gone (node_runner.dedicated_npus)."""
    from node_runner.models import DedicatedNpu

    rows = DedicatedNpu.objects.all()
    if worker is not None:
        rows = rows.filter(worker=worker)
    if container_ids is not None:
        rows = rows.filter(container_id__in=container_ids)
    if created_before is not None:
        rows = rows.filter(started_at__lt=datetime.fromtimestamp(created_before, UTC))
    rows.delete()


def reap_exited(worker: str, older_than_s: float = 30.0) -> list[str]:
    """Remove the NPUs of ``worker`` that exited more than ``older_than_s`` ago: their
    runner removes them the moment they exit, unless the engine was away then."""
    removed: list[str] = []
    filters = {
        "label": [f"{ROLE_LABEL}={ROLE_NPU}", f"flowkit.worker={worker}"],
        "status": ["exited", "dead"],
    }
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    for container in engine().containers.list(all=True, filters=filters):
        finished = _parse_docker_time(container.attrs.get("State", {}).get("FinishedAt", ""))
        if finished is not None and finished > cutoff:
            continue
        if remove_container(container):
            removed.append(container.short_id)
            # A dedicated NPU whose fork server died with its worker process still alive.
            forget_dedicated(container_ids=[str(container.id)])
    return removed


# A container is created and started in one go (ready_npu.start_npu): one still only
# created this long after is left over from a start the engine failed (it was going
# away or coming back) and its removal failed too.
CREATED_GRACE_S = 10.0


def reap_created(worker: str, older_than_s: float = CREATED_GRACE_S) -> list[str]:
    """Remove the NPUs of ``worker`` that were created more than ``older_than_s`` ago and
    never started (issue 16: an engine restart left seven for minutes)."""
    removed: list[str] = []
    filters = {"label": [f"{ROLE_LABEL}={ROLE_NPU}", f"flowkit.worker={worker}"], "status": ["created"]}
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    for container in engine().containers.list(all=True, filters=filters):
        created = _parse_docker_time(str(container.attrs.get("Created", "")))
        if created is not None and created > cutoff:
            continue  # its start may be under way
        if remove_container(container):
            removed.append(container.short_id)
    return removed


def _parse_docker_time(text: str) -> datetime | None:
    # RFC 3339 with nanoseconds ("2026-11-22T22:40:01.123456789Z"): keep microseconds.
    try:
        head, _, fraction = text.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00")
    except ValueError:
        return None


def remove_container(container: Any) -> bool:
    """Remove ``container``; False when it is already gone or going (its runner, or
    another reaper, removes it right now: the engine answers 409 Conflict)."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            return False
        raise
    return True
