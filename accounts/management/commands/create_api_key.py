from django.core.management.base import BaseCommand, CommandError

from accounts.errors import ApplicationError
from accounts.models import Membership
from accounts.permissions import ApiScope, Role
from accounts.services import api_key_create
from accounts.tenancy import tenant_command


class Command(BaseCommand):
    help = "Create an API key for a clinic and print it (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="clinic slug")
        parser.add_argument("--scopes", required=True, nargs="+", choices=ApiScope.values)
        parser.add_argument("--name", default="Integration")
        parser.add_argument("--owner-email", help="owner recorded as creator (default: the first owner)")

    @tenant_command
    def handle(self, *args, tenant, scopes, name, owner_email, **options):
        owners = Membership.objects.filter(role=Role.OWNER, is_active=True).select_related("user")
        if owner_email:
            owners = owners.filter(user__email=owner_email.lower())
        owner = owners.order_by("created_at").first()
        if owner is None:
            raise CommandError("The clinic needs an active owner to create a key.")
        try:
            key, raw = api_key_create(tenant=tenant, actor=owner.user, name=name, scopes=scopes)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(raw)
