from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import TotpDevice


class Command(BaseCommand):
    help = "Demo only: print the current TOTP code of a demo user's authenticator."

    def add_arguments(self, parser):
        parser.add_argument("email")

    def handle(self, *args, email, **options):
        if not (settings.DEBUG or settings.DEMO or settings.TESTING):
            raise CommandError("demo_totp only runs with DEBUG or CARETEXT_DEMO.")
        device = TotpDevice.objects.filter(user__email=email.lower(), confirmed=True).first()
        if device is None:
            raise CommandError(f"No authenticator for {email}")
        self.stdout.write(device.current_code())
