"""The NinjaAPI instance: authentication, error handlers, routers."""

from __future__ import annotations

from ninja import NinjaAPI

from web_ui.api import audit, me, node_tests, pipelines, runs, secrets, traces, workers
from web_ui.api.auth import AUTH
from web_ui.api.errors import install_error_handlers

api = NinjaAPI(
    title="FlowKit API",
    version="1",
    description="Pipelines, runs and run control. Authenticate with the browser session "
    "(CSRF token in X-CSRFToken) or `Authorization: Bearer <token>` (`flowkit tokens create`).",
    auth=AUTH,
    urls_namespace="api",
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
