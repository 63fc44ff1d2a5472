"""What the node runner keeps in the database: the dedicated NPUs its workers hold.

A worker process holds its dedicated NPUs in memory (node_runner.dedicated_npus); this
table says which exist, for the resource monitor, ``flowkit npu list`` and the reaper,
and lets a pipeline's deletion reach them (the rows go with the pipeline, and the
worker lets go of an NPU whose row is gone).
"""

from __future__ import annotations

from django.db import models


class DedicatedNpu(models.Model):
    container_id = models.CharField(max_length=80, primary_key=True)
    worker = models.CharField(max_length=200)
    pipeline = models.ForeignKey(
        "control_unit.Pipeline", on_delete=models.CASCADE, related_name="dedicated_npus"
    )
    node_id = models.CharField(max_length=200)
    # The NPU profile it was started with (image, runtime, memory, CPUs, pids, tmp size,
    # network) and the executions it runs at once.
    profile = models.JSONField(default=dict)
    concurrency = models.PositiveSmallIntegerField(default=1)
    executions = models.PositiveIntegerField(default=0)
    # Adopted from the warm pool (True) or started for the node.
    adopted = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["worker"]), models.Index(fields=["pipeline", "node_id"])]

    def __str__(self) -> str:
        return f"dedicated NPU {self.container_id[:12]} of {self.pipeline_id}/{self.node_id}"
