"""Health of this host's Docker engine and NPU image, for /healthz and the CLI."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from node_runner.docker_engine import engine
from node_runner.npu_image_build import SOURCE_LABEL, source_hash


def check_docker() -> dict[str, Any]:
    version = engine().version()
    detail = f"Docker engine {version.get('Version')} (API {version.get('ApiVersion')})"
    # An unregistered runtime fails every node at container creation; say so here.
    runtime = settings.FLOWKIT_NPU_RUNTIME
    if runtime not in (engine().info().get("Runtimes") or {}):
        return {
            "ok": False,
            "detail": f"{detail}; NPU runtime {runtime} is not registered with the engine "
            "(deploy/bootstrap/lib.sh ensure_gvisor installs runsc)",
        }
    return {"ok": True, "detail": f"{detail}, NPU runtime {runtime}"}


def check_npu_image() -> dict[str, Any]:
    image = engine().images.get(settings.FLOWKIT_NPU_IMAGE)
    current = image.labels.get(SOURCE_LABEL) == source_hash()
    detail = f"{settings.FLOWKIT_NPU_IMAGE} ({image.short_id})"
    if not current:
        detail += " is older than npu_image/; rebuild with `flowkit npu build`"
    return {"ok": current, "detail": detail}
