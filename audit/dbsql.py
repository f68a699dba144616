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

# Sealing (audit.services.seal_pending): an event inserted unsealed gets its place in the chain
# once. The application role has no UPDATE privilege on the trail; this function, owned by the
# table owner, sets only the three chain columns, only on unsealed rows of the active tenant,
# and the trigger refuses any other change, even by the owner.
SEAL_SQL = """
CREATE OR REPLACE FUNCTION caretext_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unchanged audit_auditevent;
BEGIN
    -- The one way to remove events: a retention purge run by the table owner, which sets this
    -- flag for its transaction and deletes a prefix of a chain (the head keeps verification).
    IF TG_OP = 'DELETE' AND current_setting('caretext.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    -- The one change allowed: sealing, i.e. giving an unsealed event its chain columns.
    IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL THEN
        unchanged := NEW;  -- the new row with its chain columns put back: every other column too
        unchanged.seq := OLD.seq;
        unchanged.prev_hash := OLD.prev_hash;
        unchanged.hash := OLD.hash;
        IF unchanged IS NOT DISTINCT FROM OLD THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE POLICY seal_unsealed ON audit_auditevent FOR UPDATE
    USING (tenant_id = caretext_current_tenant() AND seq IS NULL)
    WITH CHECK (tenant_id = caretext_current_tenant());
CREATE OR REPLACE FUNCTION caretext_audit_seal(chain_name text, after_seq bigint, ids uuid[], seqs bigint[],
                                               prevs text[], hashes text[])
    RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    linked integer := 0;
    found_rows integer;
BEGIN
    -- The head must still be where the caller read it: two sealers at once fail, never fork.
    UPDATE audit_auditchainhead SET seq = seqs[cardinality(seqs)], head_hash = hashes[cardinality(hashes)],
           updated_at = now()
     WHERE chain = chain_name AND seq = after_seq AND tenant_id = caretext_current_tenant();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit chain head % moved while sealing', chain_name USING ERRCODE = 'serialization_failure';
    END IF;
    -- One primary-key update per event (a join here can be planned as a scan of every unsealed
    -- entry, dead ones included). A row already sealed makes the trigger refuse the batch.
    FOR i IN 1 .. cardinality(ids) LOOP
        UPDATE audit_auditevent SET seq = seqs[i], prev_hash = prevs[i], hash = hashes[i]
         WHERE id = ids[i] AND tenant_id = caretext_current_tenant();
        GET DIAGNOSTICS found_rows = ROW_COUNT;
        linked := linked + found_rows;
    END LOOP;
    IF linked <> cardinality(ids) THEN
        RAISE EXCEPTION 'audit sealing linked % of % events', linked, cardinality(ids);
    END IF;
    RETURN linked;
END $$;
"""

REMOVE_SEAL_SQL = """
DROP FUNCTION IF EXISTS caretext_audit_seal(text, bigint, uuid[], bigint[], text[], text[]);
DROP POLICY IF EXISTS seal_unsealed ON audit_auditevent;
""" + APPEND_ONLY_SQL.split("CREATE TRIGGER")[0]

install_sealing = postgres_only(SEAL_SQL)
remove_sealing = postgres_only(REMOVE_SEAL_SQL)
