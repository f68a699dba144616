"""caretext_patient_session_open(digest): a patient session found by its key hash, its clinic's
scope entered on the database session, and the rows every patient page reads (the session, its
clinic, link, thread, patient and the thread's appointment) returned, in one round trip (issue #12,
item 6).

It does what ``messaging.routing`` did in five statements (set ``app.session_hash``, read the
row, clear ``app.session_hash``, set ``app.tenant_id``, read the rows), in the same order and
under the same row-level security: it is SECURITY INVOKER, so the application role sees only what
its own policies show it (the session row through the hash policy, then its clinic's rows), and
the function grants no privilege the caller lacks. PL/pgSQL keeps the plans of its statements for
the connection, so the join is not planned again on every request.

``app.tenant_id`` stays set exactly when a row is returned (a session of an active clinic whose
rows are visible); otherwise the function leaves no setting behind. Settings made with
``set_config(..., false)`` are transactional: if the statement fails, none of them stays on the
connection. ``search_path`` is pinned. The result columns are the tables' row types, so a column
added to one of the tables later needs no change here.
"""

from django.db import migrations

from accounts.rls import postgres_only

OPEN_SQL = """
CREATE OR REPLACE FUNCTION caretext_patient_session_open(digest text)
    RETURNS TABLE(session_row messaging_patientsession, tenant_row accounts_tenant, link_row messaging_securelink,
                  thread_row messaging_thread, patient_row patients_patient, appointment_row patients_appointment)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    found_id uuid;
    found_tenant bigint;
BEGIN
    IF digest IS NULL OR digest !~ '^[0-9a-f]{64}$' THEN
        RETURN;
    END IF;
    PERFORM set_config('app.session_hash', digest, false);
    SELECT ps.id, ps.tenant_id INTO found_id, found_tenant
      FROM messaging_patientsession ps JOIN accounts_tenant ct ON ct.id = ps.tenant_id
     WHERE ps.key_hash = digest AND ct.is_active;
    PERFORM set_config('app.session_hash', '', false);
    IF found_id IS NULL THEN
        RETURN;
    END IF;
    PERFORM set_config('app.tenant_id', found_tenant::text, false);
    RETURN QUERY
        SELECT ps, ct, sl, mt, pp, pa
          FROM messaging_patientsession ps
          JOIN accounts_tenant ct ON ct.id = ps.tenant_id
          JOIN messaging_securelink sl ON sl.id = ps.link_id
          JOIN messaging_thread mt ON mt.id = sl.thread_id
          JOIN patients_patient pp ON pp.id = mt.patient_id
          LEFT JOIN patients_appointment pa ON pa.id = mt.appointment_id
         WHERE ps.id = found_id;  -- the primary key only: row-level security holds it to found_tenant
    IF NOT FOUND THEN
        PERFORM set_config('app.tenant_id', '', false);
    END IF;
END $$;
"""

REMOVE_SQL = "DROP FUNCTION IF EXISTS caretext_patient_session_open(text);"


class Migration(migrations.Migration):

    dependencies = [
        ("messaging", "0002_result_release"),
        ("accounts", "0004_result_release"),
        ("patients", "0004_appointment_descriptors_encrypted"),
    ]

    operations = [
        migrations.RunPython(postgres_only(OPEN_SQL), postgres_only(REMOVE_SQL)),
    ]
