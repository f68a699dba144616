"""Print each audit chain's head as JSON lines, to keep outside the database (a WORM bucket,
an email to the compliance officer, a ticket). ``audit_verify --checkpoints FILE`` later
proves the history up to each checkpoint was not rewritten.

    python manage.py audit_checkpoint >> /secure/caretext-audit-heads.jsonl
"""

import json

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Tenant
from audit.verification import checkpoints


class Command(BaseCommand):
    help = "Export the head (sequence number and hash) of every audit chain as JSON lines."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="clinic slug (default: every clinic and the platform chain)")

    def handle(self, *args, tenant, **options):
        tenants = list(Tenant.objects.filter(slug=tenant)) if tenant else list(Tenant.objects.order_by("pk"))
        if tenant and not tenants:
            raise CommandError(f"No tenant with slug {tenant!r}")
        for point in checkpoints(tenants, platform=not tenant):
            self.stdout.write(json.dumps(point, sort_keys=True))
