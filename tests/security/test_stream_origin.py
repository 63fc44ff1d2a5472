"""Who may open a run stream (issue 16 item 8, and the stream half of item 7): only a
page of this site, compared on scheme, host and port (web_ui/ws_origin.py); a refused
viewer, a malformed run id or an unknown stream is told why with a close code, never
an HTTP 500."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from web_ui.asgi import application
from web_ui.streams import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from web_ui.ws_origin import parse_origin

pytestmark = pytest.mark.django_db(transaction=True)
DOCUMENT = {"schema_version": 1, "nodes": [{"id": "a", "code": ""}], "edges": []}


def viewer_cookie() -> tuple[bytes, bytes]:
    user = User.objects.create_user(
        f"origin-viewer-{uuid.uuid4().hex[:8]}", password="a long enough password 123"
    )
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return (b"cookie", cookie.encode())


def handshake(path: str, origin: str | None, host: str | None, *, scheme: str = "ws", extra=(), cookie=True):
    """(accepted, close code or None) of a handshake on ``path``."""
    headers = [(b"origin", origin.encode())] if origin is not None else []
    headers += [(b"host", host.encode())] if host is not None else []
    headers += list(extra)
    if cookie:
        headers.append(viewer_cookie())

    async def attempt():
        communicator = WebsocketCommunicator(application, path, headers=headers)
        communicator.scope["scheme"] = scheme
        connected, code = await communicator.connect()
        if connected:
            first = await communicator.receive_output(timeout=5)
            code = first.get("code") if first["type"] == "websocket.close" else None
        await communicator.disconnect()
        return connected, code

    return async_to_sync(attempt)()


@pytest.fixture
def run_path(no_broker) -> str:
    version = do_create_pipeline("origin", DOCUMENT).latest_version()
    assert version is not None
    return f"/ws/runs/{do_start_run(version).id}/"


def test_a_page_of_this_site_may_open_a_run_stream(run_path):
    assert handshake(run_path, "http://127.0.0.1:8000", "127.0.0.1:8000") == (True, None)
    assert handshake(run_path, "http://localhost:8000", "localhost:8000") == (True, None)
    assert handshake(run_path, "http://[::1]:8000", "[::1]:8000") == (True, None)
    assert handshake(run_path, "http://localhost", "localhost:80") == (True, None), "80 is http's port"


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://127.0.0.1:9999", "127.0.0.1:8000"),
        ("http://localhost:5173", "localhost:8000"),
        ("http://[::1]:1", "[::1]:8000"),
        ("http://127.0.0.1", "127.0.0.1:8000"),
        ("http://localhost:8000", "127.0.0.1:8000"),
    ],
    ids=["another port", "a dev server's port", "another port of ::1", "no port", "another host name"],
)
def test_a_page_on_another_port_or_host_of_the_same_machine_is_refused(run_path, origin, host):
    assert handshake(run_path, origin, host) == (False, 1000)


def test_a_page_of_another_scheme_is_refused(run_path):
    assert handshake(run_path, "https://localhost:8000", "localhost:8000") == (False, 1000)
    assert handshake(run_path, "http://localhost:8000", "localhost:8000", scheme="wss") == (False, 1000)
    assert handshake(run_path, "https://localhost:8000", "localhost:8000", scheme="wss") == (True, None)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://evil.example:8000", "evil.example:8000"),  # DNS rebinding: not in ALLOWED_HOSTS
        (None, "localhost:8000"),
        ("null", "localhost:8000"),
        ("http://localhost:8000", None),
        ("http://localhost:8000/path", "localhost:8000"),
        ("http://localhost:99999", "localhost:99999"),
        ("ws://localhost:8000", "localhost:8000"),
    ],
    ids=[
        "rebound name",
        "no origin",
        "null origin",
        "no host",
        "origin with a path",
        "bad port",
        "ws origin",
    ],
)
def test_a_missing_malformed_or_unlisted_origin_or_host_is_refused(run_path, origin, host):
    assert handshake(run_path, origin, host) == (False, 1000)


def test_a_repeated_origin_header_is_refused(run_path):
    second = [(b"origin", b"http://evil.example")]
    assert handshake(run_path, "http://localhost:8000", "localhost:8000", extra=second) == (False, 1000)


def test_csrf_trusted_origins_are_allowed_on_their_scheme_host_and_port_only(run_path, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://flowkit.example", "https://*.corp.example:8443"]
    # A TLS proxy in front: the handshake reaches Daphne as plain ws with its own Host.
    assert handshake(run_path, "https://flowkit.example", "localhost:8000") == (True, None)
    assert handshake(run_path, "https://a.corp.example:8443", "localhost:8000") == (True, None)
    assert handshake(run_path, "http://flowkit.example", "localhost:8000") == (False, 1000)
    assert handshake(run_path, "https://flowkit.example:8443", "localhost:8000") == (False, 1000)
    assert handshake(run_path, "https://a.corp.example", "localhost:8000") == (False, 1000)
    assert handshake(run_path, "https://corp.example.evil:8443", "localhost:8000") == (False, 1000)


def test_behind_a_tls_proxy_the_forwarded_scheme_counts_only_when_configured(run_path, settings):
    forwarded = [(b"x-forwarded-proto", b"https")]
    settings.SECURE_PROXY_SSL_HEADER = None
    assert handshake(run_path, "https://localhost", "localhost", extra=forwarded) == (False, 1000)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert handshake(run_path, "https://localhost", "localhost", extra=forwarded) == (True, None)
    assert handshake(run_path, "http://localhost", "localhost", extra=forwarded) == (False, 1000)


def test_the_monitor_stream_checks_the_origin_too(no_broker):
    assert handshake("/ws/monitor/", "http://localhost:8000", "localhost:8000")[0] is True
    assert handshake("/ws/monitor/", "http://localhost:8001", "localhost:8000") == (False, 1000)


@pytest.mark.parametrize(
    "run_id", ["not-a-uuid", "1", "%00", "' OR 1=1 --", "0" * 5000, "123e4567-e89b-12d3-a456-42661417400"]
)
def test_a_malformed_run_id_closes_the_stream_with_4404(no_broker, run_id):
    assert handshake(f"/ws/runs/{run_id}/", "http://localhost", "localhost") == (True, CLOSE_NOT_FOUND)


def test_a_run_that_does_not_exist_closes_with_4404_and_an_unknown_stream_too(no_broker):
    missing = "/ws/runs/123e4567-e89b-12d3-a456-426614174000/"
    assert handshake(missing, "http://localhost", "localhost") == (True, CLOSE_NOT_FOUND)
    assert handshake("/ws/nothing/", "http://localhost", "localhost") == (True, CLOSE_NOT_FOUND)
    assert handshake("/ws/runs/a/b/", "http://localhost", "localhost") == (True, CLOSE_NOT_FOUND)


def test_an_ended_session_is_told_4401_after_the_handshake_so_the_page_can_say_so(run_path):
    # Closing before accepting is an HTTP 403 at the handshake, and a browser then
    # reports 1006 whatever the reason: the page's "log in again" needs the 4401.
    assert handshake(run_path, "http://localhost", "localhost", cookie=False) == (True, CLOSE_UNAUTHENTICATED)
    assert handshake("/ws/runs/not-a-uuid/", "http://localhost", "localhost", cookie=False) == (
        True,
        CLOSE_UNAUTHENTICATED,
    ), "who asks is checked before what is asked for"


def test_parse_origin_makes_the_port_explicit_and_refuses_what_is_not_an_origin():
    assert parse_origin("http://LocalHost") == ("http", "localhost", 80)
    assert parse_origin("https://[::1]") == ("https", "::1", 443)
    assert parse_origin("https://x.example:8443") == ("https", "x.example", 8443)
    for text in ("null", "", "file:///etc", "http://", "http://u:p@x.example", "http://x:0x10", "x.example"):
        assert parse_origin(text) is None, text
