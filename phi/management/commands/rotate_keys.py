"""Rotate data keys (re-encrypting values) or re-wrap keys under the newest KEK version.

    python manage.py rotate_keys --tenant sunrise          # new data key, re-encrypt rows
    python manage.py rotate_keys --all-tenants --platform  # every clinic, and staff TOTP seeds
    python manage.py rotate_keys --kek --all-tenants --platform   # after adding a KEK version

Stopping half-way is safe: run the same command again and it finishes the rotation it
started (it adds a new version only when no earlier rotation is unfinished).
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.services import audit_record
from phi import keys
from phi.kek import kek_provider
from phi.models import KeyPurpose, KeyState
from phi.rotation import reencrypt


class Command(BaseCommand):
    help = "Rotate PHI data keys (re-encrypting values) or re-wrap keys under the newest KEK."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", action="append", default=[], help="clinic slug (repeatable)")
        parser.add_argument("--all-tenants", action="store_true")
        parser.add_argument("--platform", action="store_true", help="the platform key (staff TOTP seeds)")
        parser.add_argument("--kek", action="store_true", help="re-wrap keys under the newest KEK version only")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, tenant, all_tenants, platform, kek, batch_size, **options):
        tenants = list(Tenant.objects.filter(is_active=True)) if all_tenants else []
        for slug in tenant:
            found = Tenant.objects.filter(slug=slug).first()
            if found is None:
                raise CommandError(f"No tenant with slug {slug!r}")
            tenants.append(found)
        if not tenants and not platform:
            raise CommandError("Name --tenant SLUG, --all-tenants or --platform")
        for target in tenants:
            with tenant_scope(target):
                self._one(target, target.pk, kek, batch_size)
        if platform:
            self._one(None, keys.PLATFORM, kek, batch_size)

    def _one(self, tenant, tenant_id, kek: bool, batch_size: int) -> None:
        name = tenant.slug if tenant else "platform"
        keys.ensure_keys(tenant_id)
        if kek:
            count = keys.rewrap_all(tenant_id)
            with transaction.atomic():
                audit_record(tenant=tenant, actor=None, event_type=AuditEventType.PHI_KEK_REWRAPPED,
                             details={"count": count})
            self.stdout.write(f"{name}: re-wrapped {count} key(s) under KEK version {kek_provider().current_version()}")
            return
        active = [v for v, state in keys.versions_in_use_summary(tenant_id) if state == KeyState.ACTIVE]
        if len(active) > 1:
            self.stdout.write(f"{name}: finishing the rotation to version {max(active)}")
        else:
            self.stdout.write(f"{name}: new data key version {keys.add_version(tenant_id, KeyPurpose.DATA)}")
        result = reencrypt(tenant_id, batch_size=batch_size, progress=lambda line: self.stdout.write(f"  {line}"))
        with transaction.atomic():
            audit_record(tenant=tenant, actor=None, event_type=AuditEventType.PHI_KEY_ROTATED,
                         details={"key_version": result["active_version"], "count": result["rewritten"],
                                  "retired": result["retired"]})
        if result["remaining_old"]:
            self.stdout.write(self.style.WARNING(
                f"{name}: {result['remaining_old']} row(s) were written with an older key during the run "
                f"(processes cache keys briefly); run the command again to finish."))
        else:
            retired = ", ".join(map(str, result["retired"])) or "none"
            self.stdout.write(self.style.SUCCESS(
                f"{name}: {result['rewritten']} row(s) re-encrypted; retired version(s): {retired}"))
