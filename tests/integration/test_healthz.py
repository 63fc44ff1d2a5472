"""/healthz, served by a real Daphne process, reports every dependency."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest


@pytest.fixture
def daphne_url(web_server):
    return web_server.url


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_healthz_reports_every_dependency_up(daphne_url):
    status, body = get_json(f"{daphne_url}/healthz")
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "docker", "npu_image", "workers"}
    assert all(check["ok"] for check in body["checks"].values()), body
    assert "PostgreSQL" in body["checks"]["database"]["detail"]


def test_healthz_reports_a_missing_npu_image_as_unhealthy(settings, client, celery_worker, transactional_db):
    settings.FLOWKIT_NPU_IMAGE = "flowkit/npu:does-not-exist"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["npu_image"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
