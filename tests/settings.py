"""Settings for the test suite: production settings, with the environment pinned.

Set before web_ui.settings is imported, so the Celery worker process that the
integration tests start (it inherits this environment) sees the same values.
"""

import os

# Never pick up a developer's ~/.flowkit/flowkit.env.
os.environ["FLOWKIT_ENV_FILE"] = ""
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-never-used-in-production-0123456789")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/flowkit")
os.environ.setdefault("FLOWKIT_SECRET_KEYS", "wZ_fKAxVVBBX6HhqNgFF90mwkdyfYgK6eEtan9XERcc=")  # tests only
# One queue per pytest process, so parallel test processes never take each other's
# jobs. xdist workers inherit the controller's environment, so the queue is claimed
# by its owner; the Celery worker a test process starts inherits the owner's claim.
_owner = os.environ.get("PYTEST_XDIST_WORKER", "main")
if os.environ.get("FLOWKIT_TEST_QUEUE_OWNER") != _owner:
    os.environ["FLOWKIT_CELERY_QUEUE"] = f"flowkit-test-{_owner}-{os.getpid()}"
    # The same for the channel layer: its processes (worker, web server) share it.
    os.environ["FLOWKIT_CHANNEL_PREFIX"] = f"flowkit-test-{_owner}-{os.getpid()}"
    os.environ["FLOWKIT_TEST_QUEUE_OWNER"] = _owner

# Rate-limit counters of one test process never meet another's, nor an earlier run's.
os.environ["FLOWKIT_CACHE_PREFIX"] = f"flowkit-test-{_owner}-{os.getpid()}"

from web_ui.settings import *  # noqa: E402, F403 - the environment above must be set first

# Serve static files (the built front end) straight from the app directories, as
# `collectstatic` is not part of the test run; the browser tests' Daphne needs them.
WHITENOISE_USE_FINDERS = True
