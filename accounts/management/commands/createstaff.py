import getpass
import secrets

from django.core.management.base import BaseCommand, CommandError

from accounts.errors import ApplicationError
from accounts.permissions import Role
from accounts.services import staff_create
from accounts.tenancy import tenant_command


class Command(BaseCommand):
    help = "Add a staff member to a clinic (creating the account if needed). They enrol in MFA at first sign-in."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="clinic slug")
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--password", help="(default: prompt, or generate with --generate-password)")
        parser.add_argument("--generate-password", action="store_true")

    @tenant_command
    def handle(self, *args, tenant, email, role, password, generate_password, **options):
        if generate_password:
            password = secrets.token_urlsafe(15)
        elif password is None:
            password = getpass.getpass("Password (12+ characters): ")
        try:
            membership = staff_create(tenant=tenant, actor=None, email=email, role=role, password=password)
        except ApplicationError as exc:
            details = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.fields.items())
            raise CommandError(f"{exc.message} {details}".strip()) from None
        self.stdout.write(self.style.SUCCESS(f"{membership.user.email} is now {role} at {tenant.slug}"))
        if generate_password:
            self.stdout.write(f"Password: {password}")
