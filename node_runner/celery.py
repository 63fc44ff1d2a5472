"""The Celery app of the node runner (Redis broker, JSON only; see web_ui.settings)."""

import logging
import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from secret_manager import log_masking

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web_ui.settings")

app = Celery("flowkit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["node_runner"])


@after_setup_logger.connect
@after_setup_task_logger.connect
def _mask_secrets_in_logs(logger: logging.Logger, **_: object) -> None:
    # The worker's handlers, set up by Celery, mask what executions in progress know.
    log_masking.install(logger)
