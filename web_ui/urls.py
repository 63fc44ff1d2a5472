from django.contrib import admin
from django.urls import path

from web_ui.api.api import api
from web_ui.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]
