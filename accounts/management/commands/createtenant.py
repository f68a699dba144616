from django.core.management.base import BaseCommand, CommandError

from accounts.errors import ApplicationError
from accounts.services import tenant_create


class Command(BaseCommand):
    help = "Create a clinic (tenant)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--slug", required=True)
        parser.add_argument("--sender-label", help="Name that starts every SMS (default: the name)")
        parser.add_argument("--timezone", default="America/New_York")

    def handle(self, *args, name, slug, sender_label, timezone, **options):
        from django.core.exceptions import ValidationError

        try:
            tenant = tenant_create(name=name, slug=slug, sms_sender_label=sender_label or name[:20],
                                   timezone_name=timezone)
        except (ValidationError, ApplicationError) as exc:
            raise CommandError(f"Could not create the clinic: {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"Created clinic {tenant.slug} (id {tenant.pk})"))
