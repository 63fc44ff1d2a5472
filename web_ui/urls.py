from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from web_ui import app_shell, vault_views
from web_ui.api.api import api
from web_ui.api.errors import no_such_endpoint
from web_ui.health import healthz
from web_ui.metrics import metrics
from web_ui.rate_limits import RateLimitedLoginView

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    # Under /api/, every path no operation serves answers JSON, its root included
    # (ninja's root view raises a bare Http404, which Django renders as HTML).
    re_path(r"^api/$", no_such_endpoint),
    path("api/", api.urls),
    re_path(r"^api/", no_such_endpoint),
    path("admin/", admin.site.urls),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("vault/", vault_views.vault, name="vault"),
    path("vault/audit/", vault_views.audit, name="vault-audit"),
    path("vault/<str:name>/replace/", vault_views.replace_secret, name="vault-replace"),
    path("vault/<str:name>/delete/", vault_views.delete_secret, name="vault-delete"),
    path("app/", app_shell.app_shell, name="app"),
    re_path(r"^app/(?P<path>.+)$", app_shell.app_shell),
    path("", RedirectView.as_view(pattern_name="app"), name="home"),
]
