"""ASGI entry point, served by Daphne: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web_ui.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402 - needs Django set up first
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from web_ui.streams import MonitorConsumer, NoSuchStream, RunConsumer  # noqa: E402
from web_ui.ws_origin import SameOriginValidator  # noqa: E402

websocket_urlpatterns = [
    # Any segment: RunConsumer closes a malformed id with 4404 (no such run).
    re_path(r"^ws/runs/(?P<run_id>[^/]*)/$", RunConsumer.as_asgi()),
    path("ws/monitor/", MonitorConsumer.as_asgi()),
    re_path(r"", NoSuchStream.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
