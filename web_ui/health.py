"""GET /healthz: is every dependency of this FlowKit installation up?

Unauthenticated on purpose (load balancers and the bring-up script call it), so it
says up or down and why, never a credential or a host path.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from node_runner.engine_health import check_docker, check_npu_image

CHECK_TIMEOUT_S = 5.0


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        (version,) = cursor.fetchone()
    connection.close()  # runs in a helper thread: do not leak its connection
    return {"ok": True, "detail": str(version).split(" on ")[0]}


def check_redis() -> dict[str, Any]:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]  # a sync client
        version = info.get("redis_version")
    finally:
        client.close()
    return {"ok": True, "detail": f"Redis {version}"}


def check_workers() -> dict[str, Any]:
    from node_runner.celery import app

    replies = app.control.ping(timeout=1.0) or []
    names = sorted(name for reply in replies for name in reply)
    return {
        "ok": bool(names),
        "detail": f"{len(names)} worker(s) answering" + (f": {', '.join(names)}" if names else ""),
    }


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": check_database,
    "redis": check_redis,
    "docker": check_docker,
    "npu_image": check_npu_image,
    "workers": check_workers,
}


def _safe(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a failing dependency is a result, not a crash
        return {
            "ok": False,
            "detail": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
        }


def run_checks() -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        futures = {name: pool.submit(_safe, check) for name, check in CHECKS.items()}
        results: dict[str, dict[str, Any]] = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=CHECK_TIMEOUT_S)
            except TimeoutError:
                results[name] = {"ok": False, "detail": f"no answer within {CHECK_TIMEOUT_S:g} s"}
    return results


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unhealthy", "checks": checks}, status=200 if healthy else 503
    )
