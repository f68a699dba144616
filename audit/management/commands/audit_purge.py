"""Retention purge: remove a clinic's audit events older than a date, keeping the chain
verifiable. Runs as the database owner (DATABASE_OWNER_URL): the application role has no
DELETE privilege on the trail, and the append-only trigger lets only a transaction that
declares a purge delete events.

    python manage.py audit_purge --tenant sunrise --before 2019-01-01 --confirm sunrise

Only a prefix of the chain goes (every event up to the last one before the date); the chain
head records where verification now starts. HIPAA wants six years of documentation kept, so
dates less than six years ago are refused.
"""

from datetime import date, datetime, time, timedelta

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.services import SEAL_LOCK_CLASS, audit_record

MIN_RETENTION = timedelta(days=6 * 365 + 2)


def _owner_dsn() -> str:
    import dj_database_url

    if not settings.DATABASE_OWNER_URL:
        raise CommandError("Set DATABASE_OWNER_URL: only the table owner may purge audit events")
    owner = dj_database_url.parse(settings.DATABASE_OWNER_URL)
    current = connection.settings_dict  # the same database the app uses (a test database in tests)
    return psycopg.conninfo.make_conninfo(
        host=owner.get("HOST") or current.get("HOST"), port=owner.get("PORT") or current.get("PORT") or None,
        user=owner["USER"], password=owner.get("PASSWORD") or None, dbname=current["NAME"])


def purge_prefix(tenant_id: int, cutoff: datetime) -> tuple[int, int]:
    """(events deleted, new base seq) — one owner transaction, locked against new appends."""
    with psycopg.connect(_owner_dsn()) as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT set_config('app.tenant_id', %s, true), set_config('caretext.audit_purge', 'on', true)",
                    [str(tenant_id)])
        # The sealer's lock too: it moves the head without a transaction (audit.services).
        cur.execute("SELECT pg_advisory_xact_lock(%s::int, %s::int)", [SEAL_LOCK_CLASS, tenant_id])
        cur.execute("SELECT seq, base_seq FROM audit_auditchainhead WHERE chain = %s FOR UPDATE",
                    [f"tenant:{tenant_id}"])
        head = cur.fetchone()
        if head is None:
            return 0, 0
        cur.execute("SELECT seq, hash FROM audit_auditevent WHERE tenant_id = %s AND occurred_at < %s "
                    "AND seq IS NOT NULL ORDER BY seq DESC LIMIT 1", [tenant_id, cutoff])
        last = cur.fetchone()
        if last is None or last[0] <= head[1]:
            return 0, head[1]
        cur.execute("DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq <= %s", [tenant_id, last[0]])
        deleted = cur.rowcount
        if deleted != last[0] - head[1]:  # the prefix must go whole, or the chain would not verify
            raise CommandError(f"expected to purge {last[0] - head[1]} events but could delete {deleted}; "
                               f"nothing was purged")
        cur.execute("UPDATE audit_auditchainhead SET base_seq = %s, base_hash = %s WHERE chain = %s",
                    [last[0], last[1], f"tenant:{tenant_id}"])
        return deleted, last[0]


class Command(BaseCommand):
    help = "Delete a clinic's audit events older than a date (6+ years), keeping the chain verifiable."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="clinic slug")
        parser.add_argument("--before", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
        parser.add_argument("--confirm", required=True, help="type the slug again")
        parser.add_argument("--allow-short-retention", action="store_true", help=("for tests and "
                            "non-US deployments only: skip the six-year minimum"))

    def handle(self, *args, tenant, before, confirm, allow_short_retention, **options):
        if confirm != tenant:
            raise CommandError("--confirm must repeat the clinic's slug exactly; nothing was purged")
        target = Tenant.objects.filter(slug=tenant).first()
        if target is None:
            raise CommandError(f"No tenant with slug {tenant!r}")
        cutoff = timezone.make_aware(datetime.combine(before, time.min))
        if timezone.now() - cutoff < MIN_RETENTION and not allow_short_retention:
            raise CommandError("Audit events must be kept at least six years; choose an earlier --before date")
        deleted, base = purge_prefix(target.pk, cutoff)
        with tenant_scope(target), transaction.atomic():
            audit_record(tenant=target, actor=None, event_type=AuditEventType.AUDIT_CHAIN_PURGED,
                         details={"count": deleted, "through_seq": base})
        self.stdout.write(self.style.SUCCESS(f"{tenant}: purged {deleted} event(s); the chain now starts after "
                                             f"seq {base}"))
