"""The connection to this worker's Docker engine (DOCKER_HOST or the local socket)."""

from __future__ import annotations

import os

import docker

_engines: dict[int, docker.DockerClient] = {}


def engine() -> docker.DockerClient:
    # One client per process: Celery's prefork children must not share the
    # parent's HTTP connection pool.
    pid = os.getpid()
    if pid not in _engines:
        _engines[pid] = docker.from_env(timeout=30)
    return _engines[pid]
