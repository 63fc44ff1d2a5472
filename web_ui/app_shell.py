"""The single-page front end: one HTML shell at /app/ and every path below it.

The browser routes /app/... itself (react-router); Django only decides who may load
the shell and which built files it names. Vite writes hashed file names and a
manifest, so a new build is never hidden behind a cached bundle.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

MANIFEST = "web_ui/app/manifest.json"
ENTRY = "src/main.tsx"


class FrontendNotBuilt(Exception):
    pass


def _manifest_entry() -> dict[str, Any]:
    path = finders.find(MANIFEST)
    if not path:
        raise FrontendNotBuilt(
            "the front end is not built: run `make up`, or `npm ci && npm run build` in web_ui/frontend"
        )
    return _read_entry(Path(str(path)), Path(str(path)).stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _read_entry(path: Path, mtime_ns: int) -> dict[str, Any]:
    # Keyed by mtime so a rebuild is picked up without restarting the server.
    entry: dict[str, Any] = json.loads(path.read_text())[ENTRY]
    return entry


@ensure_csrf_cookie  # the front end sends this cookie back as X-CSRFToken
@login_required
def app_shell(request: HttpRequest, path: str = "") -> HttpResponse:
    try:
        entry = _manifest_entry()
    except FrontendNotBuilt as exc:
        return HttpResponse(str(exc), status=503, content_type="text/plain")
    styles = [f"web_ui/app/{css}" for css in entry.get("css", [])]
    script = f"web_ui/app/{entry['file']}"
    return render(request, "web_ui/app_shell.html", {"script": script, "styles": styles})
