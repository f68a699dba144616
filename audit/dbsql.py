"""PostgreSQL objects that make the audit trail append-only and scope django-auditlog rows.

Used by audit's migrations; no-ops on SQLite (the demo).
"""

from accounts.rls import postgres_only

APPEND_ONLY_SQL = """
CREATE OR REPLACE FUNCTION caretext_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The one way to remove events: a retention purge run by the table owner, which sets this
    -- flag for its transaction and deletes a prefix of a chain (the head keeps verification).
    IF TG_OP = 'DELETE' AND current_setting('caretext.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION caretext_audit_append_only();
-- Under FORCE RLS even the owner needs a policy to delete: only a declared purge, only in scope.
CREATE POLICY retention_purge ON audit_auditevent FOR DELETE
    USING (tenant_id = caretext_current_tenant() AND current_setting('caretext.audit_purge', true) = 'on');
"""

REMOVE_APPEND_ONLY_SQL = """
DROP POLICY IF EXISTS retention_purge ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_append_only ON audit_auditevent;
DROP FUNCTION IF EXISTS caretext_audit_append_only();
"""

# django-auditlog's LogEntry has no tenant column. This adds one that fills itself from the
# active tenant scope, so its rows fall under the same RLS as every tenant table; entries
# written outside any scope (staff accounts, platform keys) are platform rows.
AUDITLOG_TENANT_SQL = """
ALTER TABLE auditlog_logentry ADD COLUMN tenant_id bigint
    DEFAULT caretext_current_tenant() REFERENCES accounts_tenant(id) DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX auditlog_logentry_tenant_ts ON auditlog_logentry (tenant_id, "timestamp");
"""




install_append_only = postgres_only(APPEND_ONLY_SQL)
remove_append_only = postgres_only(REMOVE_APPEND_ONLY_SQL)
install_auditlog_tenant = postgres_only(AUDITLOG_TENANT_SQL)
remove_auditlog_tenant = postgres_only("ALTER TABLE auditlog_logentry DROP COLUMN IF EXISTS tenant_id;")
