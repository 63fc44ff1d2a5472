"""The Celery app of the node runner (Redis broker, JSON only; see web_ui.settings)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web_ui.settings")

app = Celery("flowkit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["node_runner"])
