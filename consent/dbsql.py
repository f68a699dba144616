"""PostgreSQL triggers that keep the consent ledger and BAA records append-only.

Used by consent's migrations; no-ops on SQLite (the demo). The trigger takes the names of
the columns that may still change: key rotation (``phi.rotation``) rewrites encrypted
columns in place, so ``evidence`` stays writable; every other column is frozen.
"""

from accounts.rls import postgres_only

APPEND_ONLY_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION caretext_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION '% is append-only: DELETE refused', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (to_jsonb(NEW) - TG_ARGV) IS DISTINCT FROM (to_jsonb(OLD) - TG_ARGV) THEN
        RAISE EXCEPTION '% is append-only: UPDATE refused', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
"""


def _trigger(table: str, mutable: tuple[str, ...]) -> str:
    args = ", ".join(f"'{column}'" for column in mutable)
    return (f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION caretext_append_only({args});")


INSTALL_SQL = APPEND_ONLY_FUNCTION_SQL + "\n".join([
    _trigger("consent_consentevent", ("evidence", "updated_at")),
    _trigger("consent_businessassociateagreement", ("updated_at",)),
])

REMOVE_SQL = """
DROP TRIGGER IF EXISTS consent_consentevent_append_only ON consent_consentevent;
DROP TRIGGER IF EXISTS consent_businessassociateagreement_append_only ON consent_businessassociateagreement;
DROP FUNCTION IF EXISTS caretext_append_only();
"""




install_append_only = postgres_only(INSTALL_SQL)
remove_append_only = postgres_only(REMOVE_SQL)
