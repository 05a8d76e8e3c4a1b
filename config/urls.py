"""Top-level URLs: API, schema and docs, probes, admin, the demo page."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from presence.api import PresenceView
from web.views import index

from . import health

urlpatterns = [
    path("api/presence/", PresenceView.as_view(), name="presence"),
    path("api/notifications/", include("notifications.api")),
    path("api/", include("messaging.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("", index, name="index"),
]

handler404 = "messaging.api.errors.json_not_found"
