"""Print the SMS the local gateway recorded (demo and tests): ``sms_outbox [--json] [--limit N]``."""

import json

from django.core.management.base import BaseCommand

from integrations.models import LocalSms
from integrations.sms.local import STATUS


class Command(BaseCommand):
    help = "Print the SMS recorded by the local gateway (SMS_GATEWAY=local), oldest first."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="one JSON array")
        parser.add_argument("--limit", type=int, default=100, help="the latest N (default 100)")

    def handle(self, *args, **options):
        rows = list(LocalSms.objects.order_by("-created_at", "-id")[: max(options["limit"], 0)])[::-1]
        records = [{
            "to": r.to, "body": r.body, "kind": r.kind, "status": STATUS,
            "time": r.created_at.isoformat(), "provider_id": r.provider_id,
            "idempotency_key": r.idempotency_key,
        } for r in rows]
        if options["json"]:
            self.stdout.write(json.dumps(records, indent=2, ensure_ascii=False))
            return
        if not records:
            self.stdout.write("No SMS recorded.")
        for rec in records:
            self.stdout.write(f"{rec['time']}  {rec['to']}  [{rec['kind']}] {rec['provider_id']}")
            self.stdout.write(f"    {rec['body']}")
