"""Verify the audit hash chains. Exit 0 when intact; otherwise exit 1 naming the first broken
event of each broken chain. Events written but not yet sealed into their chain are counted;
any unsealed for more than five minutes is a problem.

    python manage.py audit_verify                      # every clinic and the platform chain
    python manage.py audit_verify --tenant sunrise
    python manage.py audit_verify --checkpoints heads.jsonl   # also against exported heads
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Tenant
from audit.verification import verify


def _unsealed(report) -> str:
    if not report.unsealed:
        return ""
    return f"; {report.unsealed} not yet sealed (oldest {report.oldest_unsealed.isoformat(timespec='seconds')})"


class Command(BaseCommand):
    help = "Recompute the audit hash chains and report the first broken event."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="clinic slug (default: every clinic and the platform chain)")
        parser.add_argument("--checkpoints", help="JSON lines from audit_checkpoint to compare with")

    def handle(self, *args, tenant, checkpoints, **options):
        if tenant:
            tenants = list(Tenant.objects.filter(slug=tenant))
            if not tenants:
                raise CommandError(f"No tenant with slug {tenant!r}")
        else:
            tenants = list(Tenant.objects.order_by("pk"))
        points = []
        if checkpoints:
            try:
                points = [json.loads(line) for line in Path(checkpoints).read_text().splitlines() if line.strip()]
            except (OSError, ValueError) as exc:
                raise CommandError(f"Cannot read checkpoints: {exc.__class__.__name__}") from None
        reports = verify(tenants, platform=not tenant, checkpoints=points)
        broken = [r for r in reports if r.problem]
        for report in reports:
            if report.problem:
                self.stderr.write(f"BROKEN {report.chain}: {report.problem}")
            else:
                self.stdout.write(f"ok {report.chain}: {report.events} events, head seq {report.head_seq}"
                                  + _unsealed(report))
        if broken:
            raise CommandError(f"{len(broken)} audit chain(s) broken")
        self.stdout.write(self.style.SUCCESS(f"{len(reports)} audit chain(s) intact"))
