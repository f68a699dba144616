"""Crypto-shredding for offboarding: destroy every key of a clinic.

Afterwards none of the clinic's encrypted values can be read again — not from the database,
not from any backup. The clinic is deactivated. There is no undo.

    python manage.py shred_tenant_keys --tenant sunrise --confirm sunrise
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.services import audit_record
from phi import keys


class Command(BaseCommand):
    help = "Destroy all keys of a clinic (crypto-shredding). Irreversible."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="clinic slug")
        parser.add_argument("--confirm", required=True, help="type the slug again to confirm")

    def handle(self, *args, tenant, confirm, **options):
        if confirm != tenant:
            raise CommandError("--confirm must repeat the clinic's slug exactly; nothing was destroyed")
        target = Tenant.objects.filter(slug=tenant).first()
        if target is None:
            raise CommandError(f"No tenant with slug {tenant!r}")
        with tenant_scope(target), transaction.atomic():
            count = keys.destroy_all(target.pk)
            target.is_active = False
            target.save(update_fields=["is_active"])
            audit_record(tenant=target, actor=None, event_type=AuditEventType.PHI_KEYS_DESTROYED,
                         details={"count": count})
        self.stdout.write(self.style.SUCCESS(
            f"{tenant}: destroyed {count} key(s); the clinic is deactivated and its encrypted data unreadable."))
