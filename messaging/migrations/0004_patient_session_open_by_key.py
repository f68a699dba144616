"""caretext_patient_session_open(digest), rewritten so every step is a unique-key lookup (issue #12,
item 6).

0003's function found the session's id by its key hash, then read the session again with its
clinic, link, thread, patient and appointment in one six-table join filtered by the session's id.
The planner did not start that join at the session: on small clinic tables (and under the
row-level security filters, whose selectivity it cannot know) it scanned the clinic's patients and
threads, then every link of each thread and every session of each link, keeping the one with the
id. That was 0.3 ms of database CPU per patient page with a few hundred sessions, growing with the
sessions of the thread's links (each identity check starts one).

Here the first statement (under the hash policy, as before) returns the whole session row and its
clinic's row by the unique ``key_hash``; the second, under the clinic's scope, reads the link by its
primary key and the thread, patient and appointment by theirs. Nothing else changes: same
arguments, same result columns, SECURITY INVOKER (row-level security applies as to the
application role: the session row through the hash policy, everything else through the clinic's),
``app.session_hash`` cleared before the clinic's scope is entered, ``app.tenant_id`` left set
exactly when a row is returned, settings transactional (a failed statement leaves none),
``search_path`` pinned.
"""

import importlib

from django.db import migrations

from accounts.rls import postgres_only

# Backwards: 0003's definition again.
PREVIOUS_SQL = importlib.import_module("messaging.migrations.0003_patient_session_open").OPEN_SQL

OPEN_SQL = """
CREATE OR REPLACE FUNCTION caretext_patient_session_open(digest text)
    RETURNS TABLE(session_row messaging_patientsession, tenant_row accounts_tenant, link_row messaging_securelink,
                  thread_row messaging_thread, patient_row patients_patient, appointment_row patients_appointment)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    hit record;  -- (s: the session row, c: its clinic's row)
BEGIN
    IF digest IS NULL OR digest !~ '^[0-9a-f]{64}$' THEN
        RETURN;
    END IF;
    PERFORM set_config('app.session_hash', digest, false);
    SELECT ps AS s, ct AS c INTO hit
      FROM messaging_patientsession ps JOIN accounts_tenant ct ON ct.id = ps.tenant_id
     WHERE ps.key_hash = digest AND ct.is_active;
    PERFORM set_config('app.session_hash', '', false);
    IF (hit.s).id IS NULL THEN
        RETURN;
    END IF;
    PERFORM set_config('app.tenant_id', (hit.s).tenant_id::text, false);
    RETURN QUERY
        SELECT hit.s, hit.c, sl, mt, pp, pa
          FROM messaging_securelink sl
          JOIN messaging_thread mt ON mt.id = sl.thread_id
          JOIN patients_patient pp ON pp.id = mt.patient_id
          LEFT JOIN patients_appointment pa ON pa.id = mt.appointment_id
         WHERE sl.id = (hit.s).link_id;  -- the primary key only: row-level security holds it to the clinic
    IF NOT FOUND THEN
        PERFORM set_config('app.tenant_id', '', false);
    END IF;
END $$;
"""


class Migration(migrations.Migration):

    dependencies = [
        ("messaging", "0003_patient_session_open"),
    ]

    operations = [
        migrations.RunPython(postgres_only(OPEN_SQL), postgres_only(PREVIOUS_SQL)),
    ]
