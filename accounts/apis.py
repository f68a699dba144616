from rest_framework import serializers
from rest_framework.response import Response

from accounts import permissions as perms
from accounts.api_auth import ApiKeyPrincipal
from accounts.api_base import TenantAPIView


class WhoAmIApi(TenantAPIView):
    """Which clinic and permissions this credential (API key or staff session) has."""

    permission = perms.ANY_MEMBER

    class OutputSerializer(serializers.Serializer):
        tenant = serializers.CharField()
        tenant_name = serializers.CharField()
        principal = serializers.CharField()
        permissions = serializers.ListField(child=serializers.CharField())

    def get(self, request):
        data = {
            "tenant": self.tenant.slug,
            "tenant_name": self.tenant.name,
            "principal": str(request.user) if isinstance(request.user, ApiKeyPrincipal) else request.user.email,
            "permissions": sorted(request._request.permissions),
        }
        return Response(self.OutputSerializer(data).data)
