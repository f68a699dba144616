"""PHI encryption cost: raw AES-GCM throughput, and a 100-row decrypted list vs plaintext.

    CARETEXT_TESTING=1 .venv/bin/python bench/crypto_bench.py            # SQLite in a temp dir
    CARETEXT_TESTING=1 DATABASE_URL=postgres://caretext_owner@127.0.0.1/caretext_bench \
        .venv/bin/python bench/crypto_bench.py                           # an empty PostgreSQL db

Prints figures; asserts nothing. "list 100" times the realistic page path: query 100 rows
and read every PHI field of each (three encrypted fields per row), with warm key caches.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CARETEXT_TESTING", "1")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from accounts.services import tenant_create  # noqa: E402
from accounts.tenancy import tenant_scope  # noqa: E402
from phi import keys  # noqa: E402
from phi.envelope import open_sealed, seal  # noqa: E402
from tests.phi_testapp.models import PlainRecord, Record  # noqa: E402


def rate(fn, seconds: float = 1.5) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def median_ms(fn, repeat: int = 40) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    call_command("migrate", verbosity=0)
    tenant = tenant_create(name="Bench Clinic", slug=f"bench-{os.getpid()}", sms_sender_label="Bench Clinic")
    with tenant_scope(tenant):
        for size in (200, 2048):
            plain = os.urandom(size)

            def round_trip(plain=plain):
                blob = seal(tenant_id=tenant.pk, table="t", column="c", row_id="r", plaintext=plain)
                open_sealed(tenant_id=tenant.pk, table="t", column="c", row_id="r", blob=blob)

            print(f"encrypt+decrypt {size:>5} B: {rate(round_trip):>10,.0f} per second (one core)")

        note = "x" * 400
        for n in range(100):
            details = {"note": note, "n": n}
            Record(tenant=tenant, name=f"Patient {n} Example", details=details).save()
            PlainRecord(tenant=tenant, name=f"Patient {n} Example", details=details).save()

        def list_plain():
            for r in PlainRecord.objects.all()[:100]:
                _ = (r.name, r.birth_date, r.details)

        def list_encrypted():
            for r in Record.objects.all()[:100]:
                _ = (r.name, r.birth_date, r.details)

        list_encrypted()  # warm the key cache
        plain_ms, enc_ms = median_ms(list_plain), median_ms(list_encrypted)
        print(f"list 100 rows, plaintext: {plain_ms:7.2f} ms")
        print(f"list 100 rows, encrypted: {enc_ms:7.2f} ms  (ratio {enc_ms / plain_ms:.2f}x, "
              f"+{(enc_ms / plain_ms - 1) * 100:.0f}%)")
        keys.clear_cache()
        cold = median_ms(lambda: (keys.clear_cache(), list_encrypted()), repeat=10)
        print(f"list 100 rows, encrypted, cold key cache (one KEK unwrap): {cold:7.2f} ms")


if __name__ == "__main__":
    main()
