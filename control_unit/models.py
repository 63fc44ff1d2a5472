"""Control unit models.

For now: the single-node test run, which sends one node's code with given inputs
through the real path (Celery worker -> NPU). Pipelines, runs and the FCB join it.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class NodeTestRunState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class NodeTestRun(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    label = models.CharField(max_length=200, blank=True)
    code = models.TextField()
    inputs = models.JSONField(default=dict)
    limits = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=NodeTestRunState.choices, default=NodeTestRunState.QUEUED)
    next_nodes = models.JSONField(default=list)
    outputs = models.JSONField(default=dict)
    status_message = models.TextField(blank=True)
    error = models.JSONField(null=True, blank=True)
    logs = models.JSONField(default=list)
    dropped_log_lines = models.PositiveIntegerField(default=0)
    container_id = models.CharField(max_length=80, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"node test run {self.id} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in (NodeTestRunState.SUCCEEDED, NodeTestRunState.FAILED)
