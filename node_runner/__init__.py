"""Node runner: Celery tasks that execute nodes inside NPU containers."""

# Load the Celery app with Django so that shared_task (and .delay from any
# process: web, CLI, tests) always uses FlowKit's broker, never Celery's default.
from node_runner.celery import app as celery_app

__all__ = ["celery_app"]
