"""Retention: the detail of old runs (events and resource samples) is deleted after
FLOWKIT_TRACE_RETENTION_DAYS; runs, node results and per-execution figures stay.

`flowkit trace prune` does it on demand; the workers' heartbeats do it on their own,
one worker of the fleet every FLOWKIT_TRACE_PRUNE_INTERVAL_S."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from control_unit.models import Run
from trace_monitor.models import ResourceSample, TraceEvent

BATCH_RUNS = 500
# The shared cache's key for the current interval: whoever adds it prunes.
PRUNE_TURN_KEY = "trace-prune-turn"


@dataclass(frozen=True)
class PruneReport:
    runs: int
    events: int
    samples: int


def prune_traces(older_than_days: int, *, dry_run: bool = False) -> PruneReport:
    """Delete the events and samples of runs that finished before the cutoff, a batch
    of runs per transaction so a large backlog never holds long locks."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    has_detail = Exists(TraceEvent.objects.filter(run=OuterRef("pk"))) | Exists(
        ResourceSample.objects.filter(run=OuterRef("pk"))
    )
    run_ids = list(Run.objects.filter(has_detail, finished_at__lt=cutoff).values_list("id", flat=True))
    events = samples = 0
    for start in range(0, len(run_ids), BATCH_RUNS):
        batch = run_ids[start : start + BATCH_RUNS]
        if dry_run:
            events += TraceEvent.objects.filter(run_id__in=batch).count()
            samples += ResourceSample.objects.filter(run_id__in=batch).count()
            continue
        with transaction.atomic():
            events += TraceEvent.objects.filter(run_id__in=batch).delete()[0]
            samples += ResourceSample.objects.filter(run_id__in=batch).delete()[0]
    return PruneReport(runs=len(run_ids), events=events, samples=samples)


def take_prune_turn() -> bool:
    """True for the one caller, across every worker of the fleet, that is to prune in
    this interval: the first to add the interval's key to the shared cache (Redis SET NX
    with the interval as expiry). False when pruning on its own is turned off."""
    interval = settings.FLOWKIT_TRACE_PRUNE_INTERVAL_S
    return interval > 0 and bool(cache.add(PRUNE_TURN_KEY, "taken", timeout=interval))
