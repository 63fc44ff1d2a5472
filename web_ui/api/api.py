"""The NinjaAPI instance: authentication, error handlers, routers."""

from __future__ import annotations

from ninja import NinjaAPI

from control_unit.run_stream import MAX_EVENTS_PER_READ
from web_ui.api import audit, me, node_tests, pipelines, runs, secrets, traces, workers
from web_ui.api.auth import AUTH
from web_ui.api.errors import install_error_handlers
from web_ui.api.input import VettedParser

api = NinjaAPI(
    title="FlowKit API",
    version="1",
    description="Pipelines, runs and run control. Authenticate with the browser session "
    "(CSRF token in X-CSRFToken) or `Authorization: Bearer <token>` (`flowkit tokens create`); "
    "anything else gets 401. Bodies are JSON objects; text anywhere in a request (path, query, "
    "body) may not hold NUL or unpaired surrogates, and numbers must be finite (no NaN or "
    "Infinity): such input gets 400 (422 for a body that is not an object) naming the `field`. "
    f"`?limit=` is capped: runs {runs.MAX_RUNS_PER_PAGE}, trace events {MAX_EVENTS_PER_READ}, "
    f"audit log {audit.MAX_AUDIT_EVENTS}, secrets audit {secrets.MAX_AUDIT_EVENTS}; "
    "a larger limit gets 422.",
    auth=AUTH,
    urls_namespace="api",
    parser=VettedParser(),
)
install_error_handlers(api)
api.add_router("/pipelines", pipelines.router)
api.add_router("/runs", runs.router)
api.add_router("/secrets", secrets.router)
api.add_router("", traces.router)
api.add_router("/audit", audit.router)
api.add_router("/node-tests", node_tests.router)
api.add_router("/me", me.router)
api.add_router("/workers", workers.router)
