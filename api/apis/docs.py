"""The OpenAPI document and its Swagger UI: public (they describe the API, hold no data).

The UI is the split view: the page loads the sidecar's bundle and its init script as files,
so it runs under our ``script-src 'self'`` CSP with no inline script or style.
"""

from __future__ import annotations

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny


class _Public:
    public = True  # TenantPermission lets it through; the permission matrix reads it
    permission = ""
    write_permission = ""
    authentication_classes: list = []  # a half-signed-in session must not turn this into a 401
    permission_classes = [AllowAny]


class SchemaApi(_Public, SpectacularAPIView):
    pass


class SwaggerDocsApi(_Public, SpectacularSwaggerSplitView):
    url_name = "api-schema"
    template_name = "api/swagger_ui.html"
