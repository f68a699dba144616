"""The base class of every API view (R8): it owns authentication, tenant and permission."""

from rest_framework.views import APIView


class TenantAPIView(APIView):
    """Base for every API view. Subclasses set ``permission`` / ``write_permission`` only."""

    permission: str = ""
    write_permission: str = ""
    public = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("get_permissions", "initial", "get_authenticators", "check_permissions"):
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} must not override {name}: tenancy and permissions live in TenantAPIView")

    @property
    def tenant(self):
        return self.request._request.tenant
