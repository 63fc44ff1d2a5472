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
    CANCELLED = "cancelled"


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
        return self.state in (NodeTestRunState.SUCCEEDED, NodeTestRunState.FAILED, NodeTestRunState.CANCELLED)


class Pipeline(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "created_at"]
        indexes = [models.Index(fields=["name"])]

    def __str__(self) -> str:
        return self.name

    def latest_version(self) -> PipelineVersion | None:
        return self.versions.order_by("-number").first()


class ImmutableRowError(Exception):
    pass


class PipelineVersion(models.Model):
    """One saved state of a pipeline's document. Never changed once written: a run
    points at exactly the graph it executed."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    document = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pipeline", "-number"]
        constraints = [models.UniqueConstraint(fields=["pipeline", "number"], name="unique_version_number")]

    def __str__(self) -> str:
        return f"{self.pipeline_id} v{self.number}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise ImmutableRowError("a pipeline version is immutable; save a new version instead")
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class RunState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeState(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class Run(models.Model):
    """A run of one pipeline version; its FCB is this row plus its NodeRun rows."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="runs")
    version = models.ForeignKey(PipelineVersion, on_delete=models.PROTECT, related_name="runs")
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.QUEUED)
    reason = models.TextField(blank=True)
    input = models.JSONField(default=dict, blank=True)
    source_run = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived_runs"
    )
    rerun_from = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The FCB's counters (control_unit.fcb): its nodes not yet in a terminal state, and
    # the first node in document order that failed without continue_on_error.
    unfinished = models.PositiveIntegerField(default=0)
    failed_node = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["pipeline", "-created_at"]),
            models.Index(fields=["state", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.state})"


class NodeRun(models.Model):
    """The FCB record of one node in one run (its latest attempt)."""

    # What anyone allowed to see the run sees of a node (already masked when stored).
    VISIBLE_FIELDS = (
        "node_id", "state", "attempt", "reused", "reason", "inputs", "outputs", "next_nodes",
        "status_message", "error", "logs", "dropped_log_lines", "started_at", "finished_at",
        "infra_retries",
    )  # fmt: skip

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="node_runs")
    node_id = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=NodeState.choices, default=NodeState.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    dispatched = models.BooleanField(default=False)
    inputs = models.JSONField(null=True, blank=True)  # a source node's: the run's input
    # Any other node's inputs: [[port, upstream node, its output port], ...], resolved
    # from the upstream rows' outputs when read (control_unit.node_inputs), not copied.
    input_refs = models.JSONField(null=True, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    next_nodes = models.JSONField(null=True, blank=True)
    status_message = models.TextField(blank=True)
    error = models.JSONField(null=True, blank=True)
    logs = models.JSONField(default=list, blank=True)
    dropped_log_lines = models.PositiveIntegerField(default=0)
    reused = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    # Upstream nodes not yet finished: the node is decided when this reaches 0.
    waiting = models.PositiveIntegerField(default=0)
    # Attempts that failed for the infrastructure (the Docker engine was away), retried
    # on their own budget: they do not count against the node's retries (fcb.node_failed).
    infra_retries = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    container_id = models.CharField(max_length=80, blank=True)
    # When the latest dispatch should reach a worker (now, or after a retry's backoff).
    # A queued node still unclaimed long after it is re-sent (see do_redispatch_overdue).
    due_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The last sign of life of the runner holding a claimed attempt (set at the claim,
    # then stamped by node_runner.attempt_stamps); an attempt silent too long is failed.
    alive_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "node_id"], name="unique_node_per_run")]
        indexes = [
            models.Index(
                fields=["due_at"], name="noderun_overdue", condition=models.Q(state="queued", dispatched=True)
            ),
            models.Index(
                fields=["alive_at"], name="noderun_held", condition=models.Q(state__in=("running", "paused"))
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} in run {self.run_id} ({self.state})"


class RunTransition(models.Model):
    """Append-only history of every state change of a run and its nodes."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="transitions")
    node_id = models.CharField(max_length=64, blank=True)  # blank: the run itself
    source = models.CharField(max_length=16)
    target = models.CharField(max_length=16)
    attempt = models.PositiveIntegerField(default=0)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "node_id", "id"])]

    def __str__(self) -> str:
        return f"{self.node_id or 'run'}: {self.source} -> {self.target}"


class AuditEvent(models.Model):
    """Who did what, when: sign-ins, pipeline edits, run controls, secret operations.

    Append-only: the model refuses updates and deletes, and a PostgreSQL trigger
    (migration 0003) refuses them for anyone who goes around the ORM. The actor is kept
    by name, so deleting a user does not rewrite history.
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150, blank=True)  # blank: the system (a worker)
    via = models.CharField(max_length=16, blank=True)  # web, api, cli, worker
    action = models.CharField(max_length=40, db_index=True)
    target = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["action", "-at"], name="audit_action_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor or 'system'} {self.action} {self.target}"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self._state.adding:
            raise ImmutableRowError("the audit log is append-only")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise ImmutableRowError("the audit log is append-only")
