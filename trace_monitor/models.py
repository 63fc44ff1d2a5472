"""The trace of a run: an ordered event log, one row per node execution, resource
samples, and the workers' heartbeats.

Every row a person can see was masked by the runner before it was written.
"""

from __future__ import annotations

from django.db import models


class RunTrace(models.Model):
    """The sequence counter of a run's events. Reserving numbers updates this row, so
    the writers of one run's events are serialised until they commit: events become
    visible in sequence order and a client can detect a gap."""

    run = models.OneToOneField("control_unit.Run", primary_key=True, on_delete=models.CASCADE)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"trace of run {self.run_id} (last seq {self.last_seq})"


class TraceEvent(models.Model):
    """One thing that happened in a run: a state change, a log line, inputs, outputs,
    an error, a container start. Append-only; ``seq`` counts 1, 2, 3... per run."""

    run = models.ForeignKey("control_unit.Run", on_delete=models.CASCADE, related_name="trace_events")
    seq = models.BigIntegerField()
    node_id = models.CharField(max_length=64, blank=True)  # blank: the run itself
    attempt = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=24)
    at = models.DateTimeField()
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_trace_seq")]
        indexes = [
            models.Index(fields=["run", "node_id", "seq"], name="trace_run_node_seq"),
            models.Index(fields=["run", "kind", "seq"], name="trace_run_kind_seq"),
            models.Index(fields=["at"], name="trace_at"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} {self.node_id or 'run'}"


class NodeExecution(models.Model):
    """One attempt of one node, from container start to its outcome: the run's timeline
    and the pipeline's figures are built from these rows."""

    run = models.ForeignKey("control_unit.Run", on_delete=models.CASCADE, related_name="executions")
    # Kept beside the run so that per-pipeline figures need no join.
    pipeline = models.ForeignKey("control_unit.Pipeline", on_delete=models.CASCADE, related_name="+")
    node_id = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True)
    container_id = models.CharField(max_length=80, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    outcome = models.CharField(max_length=16, default="running")  # running, succeeded, failed
    error_type = models.CharField(max_length=80, blank=True)
    cpu_percent_max = models.FloatField(null=True, blank=True)
    memory_bytes_max = models.BigIntegerField(null=True, blank=True)
    net_rx_bytes = models.BigIntegerField(null=True, blank=True)
    net_tx_bytes = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["run", "started_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "node_id", "attempt"], name="unique_node_execution"),
        ]
        indexes = [models.Index(fields=["pipeline", "node_id", "finished_at"], name="execution_figures")]

    def __str__(self) -> str:
        return f"{self.node_id} attempt {self.attempt} ({self.outcome})"


class ResourceSample(models.Model):
    """What one NPU used at one moment, read from the Docker stats API."""

    run = models.ForeignKey("control_unit.Run", on_delete=models.CASCADE, related_name="resource_samples")
    node_id = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField()
    at = models.DateTimeField()
    cpu_percent = models.FloatField(null=True)  # of one CPU; None for the first reading
    memory_bytes = models.BigIntegerField()
    memory_limit_bytes = models.BigIntegerField(null=True)
    net_rx_bytes = models.BigIntegerField(null=True)  # None: the NPU has no network
    net_tx_bytes = models.BigIntegerField(null=True)
    pids = models.PositiveIntegerField(null=True)

    class Meta:
        ordering = ["run", "node_id", "attempt", "at"]
        indexes = [models.Index(fields=["run", "node_id", "attempt", "at"], name="sample_series")]

    def __str__(self) -> str:
        return f"{self.node_id}#{self.attempt} at {self.at:%H:%M:%S}"


class WorkerStatus(models.Model):
    """The last heartbeat of a worker: its host's load, the NPUs it drives, what it
    offers (capabilities, the queues it consumes) and how its pool scales."""

    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    concurrency = models.PositiveIntegerField(default=0)  # the most processes its pool may have
    concurrency_min = models.PositiveIntegerField(default=0)  # the fewest (autoscaling); 0: fixed pool
    pool_size = models.PositiveIntegerField(default=0)  # processes now
    queue_depth = models.PositiveIntegerField(default=0)  # messages waiting in the queues it consumes
    # Recent changes of pool_size, oldest first: {"at", "from", "to", "queue_depth"}.
    scaling = models.JSONField(default=list)
    capabilities = models.JSONField(default=list)
    queues = models.JSONField(default=list)
    cpu_percent = models.FloatField(default=0.0)  # of the whole host
    cpu_count = models.PositiveIntegerField(default=1)
    memory_used_bytes = models.BigIntegerField(default=0)
    memory_total_bytes = models.BigIntegerField(default=0)
    net_rx_bytes_per_s = models.FloatField(default=0.0)  # the host's physical interfaces
    net_tx_bytes_per_s = models.FloatField(default=0.0)
    npus = models.JSONField(default=list)
    # online, draining (takes nothing new, finishes its nodes, then exits), stopped, lost
    state = models.CharField(max_length=16, default="online")
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"
