"""The Docker health check says when the configured NPU runtime is missing."""

from __future__ import annotations

from unittest import mock

from node_runner import engine_health


def check_with(runtimes: dict[str, object]) -> dict[str, object]:
    with mock.patch.object(engine_health, "engine") as engine:
        engine.return_value.version.return_value = {"Version": "20.10", "ApiVersion": "1.41"}
        engine.return_value.info.return_value = {"Runtimes": runtimes}
        return engine_health.check_docker()


def test_a_registered_runtime_is_healthy_and_named(settings):
    settings.FLOWKIT_NPU_RUNTIME = "runsc"
    result = check_with({"runc": {}, "runsc": {"path": "/usr/bin/runsc"}})
    assert result == {"ok": True, "detail": "Docker engine 20.10 (API 1.41), NPU runtime runsc"}


def test_an_unregistered_runtime_is_reported_down_with_the_fix(settings):
    settings.FLOWKIT_NPU_RUNTIME = "runsc"
    result = check_with({"runc": {}})
    assert result["ok"] is False
    assert "NPU runtime runsc is not registered" in str(result["detail"])
    assert "ensure_gvisor" in str(result["detail"])
