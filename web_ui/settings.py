"""FlowKit settings, read from typed environment variables.

Values come from the process environment; the bring-up script (``make up``) also
writes them to ``$FLOWKIT_HOME/flowkit.env`` (default ``~/.flowkit/flowkit.env``),
which is loaded here without overriding anything already set. Every variable is
listed in ``deploy/.env.example``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from control_unit.routing import CapabilityError, parse_capabilities
from secret_manager.vault import load_keys
from web_ui.env import env_bool, env_choice, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

FLOWKIT_HOME = Path(os.environ.get("FLOWKIT_HOME", Path.home() / ".flowkit"))
_env_file = os.environ.get("FLOWKIT_ENV_FILE", str(FLOWKIT_HOME / "flowkit.env"))
if _env_file and Path(_env_file).is_file():
    load_dotenv(_env_file, override=False)

DEBUG = env_bool("DEBUG", False)

_secret_key = env_secret("SECRET_KEY")
if not _secret_key:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (or SECRET_KEY_FILE) to a long random "
            "string; `make up` writes one to ~/.flowkit/flowkit.env. Only DEBUG=true runs without it."
        )
    _secret_key = "insecure-debug-only-key-" + "x" * 32
SECRET_KEY = _secret_key

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",
    "web_ui",
    "control_unit",
    "node_runner",
    "secret_manager",
    "trace_monitor",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before sessions and views: refused API input touches nothing (web_ui/api/input.py).
    "web_ui.api.input.ApiInputMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "web_ui.urls"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
ASGI_APPLICATION = "web_ui.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/flowkit")
if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
    raise ImproperlyConfigured(f"DATABASE_URL must be a postgres:// URL, got {DATABASE_URL.split('@')[-1]!r}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    # Name the scheme only: the URL may carry a password.
    raise ImproperlyConfigured(
        "REDIS_URL must be a redis://, rediss:// or unix:// URL, "
        f"got one starting {REDIS_URL.split(':')[0]!r}"
    )

# The cache holds rate-limit counters, shared by every web process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env_str("FLOWKIT_CACHE_PREFIX", "flowkit"),
    }
}
# Rate limits ("count/period", period s, m or h): sign-in attempts per client address
# and per user name, and runs started (start, restart, rerun) per user.
FLOWKIT_SIGN_IN_RATE = env_str("FLOWKIT_SIGN_IN_RATE", "10/m")
FLOWKIT_RUN_START_RATE = env_str("FLOWKIT_RUN_START_RATE", "120/m")
RATELIMIT_USE_CACHE = "default"

# The prefix keeps two installations on one Redis (or a test run beside `make up`) out
# of each other's streams: the resource monitor's group has the same name in both.
# Channel-layer groups and the runs' state channels (control_unit.run_states) live
# under this prefix in Redis.
FLOWKIT_CHANNEL_PREFIX = env_str("FLOWKIT_CHANNEL_PREFIX", "flowkit")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": FLOWKIT_CHANNEL_PREFIX},
    }
}

# Celery: JSON only (never pickle: task arguments must not be able to become code),
# acknowledged after the task finishes so a worker crash redelivers it. Acknowledging
# early or reserving more tasks per process changed the hand-off by no more than two
# runs of one setting differ (docs/PERFORMANCE.md, "Hand-off"); the knobs stay for the
# benchmark and for operators.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = env_bool("FLOWKIT_CELERY_ACKS_LATE", True)
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("FLOWKIT_CELERY_PREFETCH_MULTIPLIER", 1, minimum=1, maximum=64)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
FLOWKIT_CELERY_QUEUE = env_str("FLOWKIT_CELERY_QUEUE", "flowkit")
CELERY_TASK_DEFAULT_QUEUE = FLOWKIT_CELERY_QUEUE
# What this worker's host offers (comma separated, e.g. "gpu,network"): nodes that
# require capabilities are sent to queues derived from FLOWKIT_CELERY_QUEUE and their
# capability set, and a worker consumes the queue of every subset of its own
# capabilities (control_unit.routing; at most 4 capabilities, 16 queues).
try:
    FLOWKIT_WORKER_CAPABILITIES = parse_capabilities(env_str("FLOWKIT_WORKER_CAPABILITIES", ""))
except CapabilityError as exc:
    raise ImproperlyConfigured(f"FLOWKIT_WORKER_CAPABILITIES: {exc}") from None
# How many state changes of a worker's pool size (autoscaling) its status keeps.
FLOWKIT_WORKER_SCALING_HISTORY = env_int("FLOWKIT_WORKER_SCALING_HISTORY", 20, minimum=1, maximum=1000)
# A task must outlive its longest node before Redis hands it to another worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("FLOWKIT_CELERY_VISIBILITY_TIMEOUT_S", 4 * 3600, minimum=60)
}

# The NPU: image, runtime, and the limits a node gets unless it asks for others.
FLOWKIT_NPU_IMAGE = env_str("FLOWKIT_NPU_IMAGE", "flowkit/npu:latest")
FLOWKIT_NPU_RUNTIME = env_choice("FLOWKIT_NPU_RUNTIME", "runc", ("runc", "runsc"))
FLOWKIT_NPU_NETWORK = env_str("FLOWKIT_NPU_NETWORK", "flowkit-npu")
# false: the deployment enforces NPU egress itself; the worker then does not check the host's policy.
FLOWKIT_NPU_EGRESS_CHECK = env_bool("FLOWKIT_NPU_EGRESS_CHECK", True)
FLOWKIT_NPU_TIMEOUT_S = env_float("FLOWKIT_NPU_TIMEOUT_S", 60.0, minimum=0.1, maximum=24 * 3600)
FLOWKIT_NPU_MEMORY_MB = env_int("FLOWKIT_NPU_MEMORY_MB", 256, minimum=16, maximum=64 * 1024)
FLOWKIT_NPU_CPUS = env_float("FLOWKIT_NPU_CPUS", 1.0, minimum=0.01, maximum=64)
FLOWKIT_NPU_PIDS = env_int("FLOWKIT_NPU_PIDS", 64, minimum=4, maximum=4096)
FLOWKIT_NPU_TMPFS_MB = env_int("FLOWKIT_NPU_TMPFS_MB", 64, minimum=1, maximum=4096)
FLOWKIT_NPU_MAX_OUTPUT_BYTES = env_int("FLOWKIT_NPU_MAX_OUTPUT_BYTES", 8 * 1024 * 1024, minimum=1024)
FLOWKIT_NPU_MAX_LOG_LINES = env_int("FLOWKIT_NPU_MAX_LOG_LINES", 5000, minimum=10)
FLOWKIT_NPU_MAX_LOG_BYTES = env_int("FLOWKIT_NPU_MAX_LOG_BYTES", 2 * 1024 * 1024, minimum=1024)
FLOWKIT_NPU_MAX_LOG_LINE_BYTES = env_int("FLOWKIT_NPU_MAX_LOG_LINE_BYTES", 16 * 1024, minimum=80)
FLOWKIT_NPU_FLOOD_BYTES = env_int("FLOWKIT_NPU_FLOOD_BYTES", 32 * 1024 * 1024, minimum=1024)
# The warm pool (node_runner.warm_pool), per worker process and NPU profile: between
# MIN and MAX started NPUs wait for a node, following the queue depth; MAX=0 turns it off.
FLOWKIT_NPU_POOL_MIN = env_int("FLOWKIT_NPU_POOL_MIN", 2, minimum=0, maximum=64)
FLOWKIT_NPU_POOL_MAX = env_int("FLOWKIT_NPU_POOL_MAX", 4, minimum=0, maximum=64)
FLOWKIT_NPU_POOL_REFILL_CONCURRENCY = env_int("FLOWKIT_NPU_POOL_REFILL_CONCURRENCY", 2, minimum=1, maximum=16)
# Isolation (node_runner.dedicated_npus): "dedicated" gives each pipeline node a
# long-lived NPU whose fork server starts a fresh process per execution, unless the
# node asks for "container"; "container" forces a single-use container per execution
# for every node. A worker process keeps at most DEDICATED_MAX dedicated NPUs (the least
# recently used goes first), lets one go after DEDICATED_IDLE_S without an execution,
# and replaces one after DEDICATED_MAX_EXECUTIONS executions.
FLOWKIT_NPU_ISOLATION = env_choice("FLOWKIT_NPU_ISOLATION", "dedicated", ("dedicated", "container"))
FLOWKIT_NPU_DEDICATED_MAX = env_int("FLOWKIT_NPU_DEDICATED_MAX", 64, minimum=1, maximum=1024)
FLOWKIT_NPU_DEDICATED_IDLE_S = env_float(
    "FLOWKIT_NPU_DEDICATED_IDLE_S", 600.0, minimum=1.0, maximum=7 * 24 * 3600
)
FLOWKIT_NPU_DEDICATED_MAX_EXECUTIONS = env_int(
    "FLOWKIT_NPU_DEDICATED_MAX_EXECUTIONS", 1000, minimum=1, maximum=10_000_000
)

# The trace monitor. Events and streams carry at most PREVIEW_BYTES of an input or
# output (the whole value is downloadable); a runner stores a node's log lines in
# batches at most every FLUSH_S; `flowkit trace prune` deletes the events and
# resource samples of runs that finished more than RETENTION_DAYS ago, and one worker
# of the fleet does the same every PRUNE_INTERVAL_S (0: only the command does).
FLOWKIT_TRACE_PREVIEW_BYTES = env_int("FLOWKIT_TRACE_PREVIEW_BYTES", 16 * 1024, minimum=256)
FLOWKIT_TRACE_FLUSH_S = env_float("FLOWKIT_TRACE_FLUSH_S", 0.25, minimum=0.01, maximum=10)
FLOWKIT_TRACE_RETENTION_DAYS = env_int("FLOWKIT_TRACE_RETENTION_DAYS", 30, minimum=1)
FLOWKIT_TRACE_PRUNE_INTERVAL_S = env_int("FLOWKIT_TRACE_PRUNE_INTERVAL_S", 3600, minimum=0)
# How often each worker reports its host's load and its NPUs to the resource monitor,
# and how long a worker may stay silent before the others declare it lost: its running
# attempts fail with WorkerLost (and are retried where the node has retries left) and
# its NPUs on their engine are removed.
FLOWKIT_WORKER_HEARTBEAT_S = env_float("FLOWKIT_WORKER_HEARTBEAT_S", 2.0, minimum=0.2, maximum=300)
FLOWKIT_WORKER_LOST_AFTER_S = env_float("FLOWKIT_WORKER_LOST_AFTER_S", 15.0, minimum=1.0, maximum=3600)
# A queued node that no worker claimed this long after it was due is sent again if the
# broker no longer holds its message (lost with a broker restart, or never sent; see
# control_unit/broker_messages.py): one merely waiting behind a backlog is not.
FLOWKIT_REDISPATCH_AFTER_S = env_float("FLOWKIT_REDISPATCH_AFTER_S", 120.0, minimum=1.0, maximum=24 * 3600)
# An attempt the Docker engine's absence ended waits this long at most for the engine
# to answer again, then ends as EngineUnavailable: retried without using the node's
# retries (node_runner/engine_outage.py).
FLOWKIT_ENGINE_WAIT_S = env_float("FLOWKIT_ENGINE_WAIT_S", 60.0, minimum=0.0, maximum=3600)
# The process running a claimed attempt stamps it this often; an attempt of a live
# worker with no stamp for FLOWKIT_ATTEMPT_SILENT_AFTER_S (its process was killed, or
# hangs) fails with RunnerLost, retried where the node has retries left.
FLOWKIT_ATTEMPT_STAMP_S = env_float("FLOWKIT_ATTEMPT_STAMP_S", 10.0, minimum=0.1, maximum=600)
FLOWKIT_ATTEMPT_SILENT_AFTER_S = env_float(
    "FLOWKIT_ATTEMPT_SILENT_AFTER_S", 60.0, minimum=1.0, maximum=24 * 3600
)
# A runner whose attempt's execution started has the node's timeout plus this (paused
# time not counted), then this again to store its outcome; one stuck past that stops
# stamping, and the watchdog fails the attempt as above. Longer than the database
# retries of the trace and the outcome (about a minute).
FLOWKIT_ATTEMPT_GRACE_S = env_float("FLOWKIT_ATTEMPT_GRACE_S", 300.0, minimum=1.0, maximum=24 * 3600)
if FLOWKIT_ATTEMPT_SILENT_AFTER_S < 3 * FLOWKIT_ATTEMPT_STAMP_S:
    # A live runner whose stamp was delayed once (a slow database) must not be taken for a dead one.
    raise ImproperlyConfigured(
        "FLOWKIT_ATTEMPT_SILENT_AFTER_S must be at least 3 times FLOWKIT_ATTEMPT_STAMP_S"
    )

# The bearer token a Prometheus scrape of GET /metrics sends (or a _FILE); unset, the
# endpoint is off. At least 16 characters: it guards figures about every run.
FLOWKIT_METRICS_TOKEN = env_secret("FLOWKIT_METRICS_TOKEN") or ""
if FLOWKIT_METRICS_TOKEN and len(FLOWKIT_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("FLOWKIT_METRICS_TOKEN must be at least 16 characters long")

# Secret vault master keys (Fernet; the first encrypts, all decrypt). From the
# environment or a _FILE, never from the database; mandatory outside DEBUG.
FLOWKIT_SECRET_KEYS = load_keys(env_secret("FLOWKIT_SECRET_KEYS"), debug=DEBUG)

# Pipeline documents: larger ones are refused with a clear error.
FLOWKIT_MAX_DOCUMENT_BYTES = env_int("FLOWKIT_MAX_DOCUMENT_BYTES", 4 * 1024 * 1024, minimum=1024)
FLOWKIT_MAX_CODE_BYTES = env_int("FLOWKIT_MAX_CODE_BYTES", 256 * 1024, minimum=256)
# A request body may hold a whole document plus its JSON envelope; anything larger is
# refused with 413 before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = FLOWKIT_MAX_DOCUMENT_BYTES + 64 * 1024

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("FLOWKIT_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the front end reads it to send X-CSRFToken
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if env_bool("FLOWKIT_HTTPS", False):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("FLOWKIT_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("FLOWKIT_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("FLOWKIT_LOG_LEVEL", "INFO")},
}
