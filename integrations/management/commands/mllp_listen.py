"""``python manage.py mllp_listen --tenant <slug> [--host 127.0.0.1] [--port 2575]``

Receives HL7 v2 over MLLP for one clinic (run one listener per clinic and port, behind the
clinic's VPN or TLS tunnel). Stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from accounts.tenancy import tenant_command
from integrations.hl7.apis import max_message_bytes
from integrations.hl7.mllp import MllpServer


class Command(BaseCommand):
    help = "Receive HL7 v2 messages over MLLP for one clinic; one ACK per message."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="The clinic's slug.")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=2575, help="0 picks a free port (printed).")
        parser.add_argument("--max-bytes", type=int, default=None, help="Largest message accepted.")

    @tenant_command
    def handle(self, *args, tenant, host, port, max_bytes, **options):
        if not tenant.is_active:
            raise CommandError(f"The clinic {tenant.slug!r} is deactivated.")
        server = MllpServer((host, port), tenant=tenant, max_bytes=max_bytes or max_message_bytes())
        stopping = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stopping.set())
        worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        worker.start()
        bound_host, bound_port = server.server_address[:2]
        self.stdout.write(f"MLLP listening on {bound_host}:{bound_port} for {tenant.slug}")
        self.stdout.flush()
        while not stopping.wait(0.5):
            pass
        server.stop()
        worker.join(timeout=5)
        self.stdout.write("MLLP listener stopped")
