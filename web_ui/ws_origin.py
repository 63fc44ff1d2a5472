"""Which pages may open a WebSocket: only those served by this site, compared on scheme,
host and port, as Django's CSRF check compares the Origin of an unsafe HTTP request.

A browser sends the session cookie with a WebSocket handshake whatever page opened it,
and cookies do not depend on the port: a page on any other port of 127.0.0.1 is
"same-site" and would read run streams. Channels' AllowedHostsOriginValidator compares
the origin's host name only, so it let such a page in. Here an origin is allowed when it
is this site's own origin (the handshake's scheme and its Host header, which must be one
of ALLOWED_HOSTS, so a DNS-rebinding name is not "this site") or one of
CSRF_TRUSTED_ORIGINS (a TLS proxy in front, another public name). Anything else is
refused at the handshake (HTTP 403), before a consumer or the session is looked at.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def parse_origin(text: str) -> Origin | None:
    """(scheme, host, port) of an http(s) origin, the port made explicit; None if it is
    not one (``null``, a file: page, garbage)."""
    try:
        parts = urlsplit(text.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    return parts.scheme, parts.hostname, DEFAULT_PORTS[parts.scheme] if port is None else port


def _allowed_hosts() -> list[str]:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django's HttpRequest.get_host
    return allowed


def _header(scope: dict[str, Any], name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


def _is_secure(scope: dict[str, Any]) -> bool:
    if scope.get("scheme") == "wss":
        return True
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not proxy_header:
        return False
    name, secure_value = proxy_header
    values = _header(scope, name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1"))
    # As Django: the first of a comma-separated list is what the client's proxy said.
    return bool(values) and values[0].split(",")[0].strip() == secure_value


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin of the page this site serves at the handshake's address, or None if
    the Host header is missing, repeated or not one of ALLOWED_HOSTS."""
    hosts = _header(scope, b"host")
    if len(hosts) != 1:
        return None
    domain, _ = split_domain_port(hosts[0])
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    scheme = "https" if _is_secure(scope) else "http"
    return parse_origin(f"{scheme}://{hosts[0]}")


def _trusted(origin: Origin) -> bool:
    for pattern in settings.CSRF_TRUSTED_ORIGINS:
        # "https://*.example.com" trusts the subdomains, as for Django's CSRF check.
        wildcard = "://*." in pattern
        trusted = parse_origin(pattern.replace("://*.", "://", 1))
        if trusted is None or (trusted[0], trusted[2]) != (origin[0], origin[2]):
            continue
        if origin[1] == trusted[1] or (wildcard and is_same_domain(origin[1], f".{trusted[1]}")):
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    origins = _header(scope, b"origin")
    if len(origins) != 1:
        return False
    origin = parse_origin(origins[0])
    if origin is None:
        return False
    return origin == own_origin(scope) or _trusted(origin)


class SameOriginValidator:
    """ASGI middleware: the WebSocket handshake goes on only from an allowed origin."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator guards WebSocket connections only")
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier.as_asgi()(scope, receive, send)
