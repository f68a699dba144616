"""Row-level security for tenant tables, as one migration operation.

Every migration that creates a tenant-owned table adds ``EnableRLS("<model>")``. On
PostgreSQL it enables and forces RLS and creates the tenant policy; on SQLite (the demo) it
does nothing. ``tests/security/test_rls.py`` fails for any tenant table without a policy.
"""

from django.db.migrations.operations.base import Operation

# Defined in accounts/migrations/0001: NULL when no tenant is set, so no rows match.
CURRENT_TENANT_SQL = "caretext_current_tenant()"
CURRENT_USER_SQL = "caretext_current_user()"

FUNCTIONS_SQL = """
CREATE OR REPLACE FUNCTION caretext_current_tenant() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::bigint $$;
CREATE OR REPLACE FUNCTION caretext_current_user() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.user_id', true), '')::bigint $$;
"""


class EnableRLS(Operation):
    """ENABLE + FORCE row-level security with ``tenant_id = caretext_current_tenant()``.

    ``extra_read`` widens only what may be *read* (for example a user's own memberships);
    writes are always held to the active tenant.

    ``append_only`` creates no UPDATE/DELETE policies, so the table refuses both under RLS;
    ``platform_rows`` also lets rows with a NULL tenant be inserted (never read back);
    ``extra_write`` widens reads and writes alike (platform keys: ``tenant_id IS NULL``).
    """

    reversible = True

    def __init__(self, model_name: str, extra_read: str = "", append_only: bool = False, platform_rows: bool = False,
                 extra_write: str = ""):
        self.model_name = model_name
        self.extra_read = extra_read
        self.extra_write = extra_write
        self.append_only = append_only
        self.platform_rows = platform_rows

    def deconstruct(self):
        kwargs = {"model_name": self.model_name}
        for name in ("extra_read", "append_only", "platform_rows", "extra_write"):
            if getattr(self, name):
                kwargs[name] = getattr(self, name)
        return (self.__class__.__qualname__, [], kwargs)

    def state_forwards(self, app_label, state):
        pass

    def _table(self, app_label, state):
        return state.apps.get_model(app_label, self.model_name)._meta.db_table

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return
        table = schema_editor.quote_name(self._table(app_label, to_state))
        tenant_match = f"tenant_id = {CURRENT_TENANT_SQL}"
        if self.extra_write:
            tenant_match = f"({tenant_match}) OR ({self.extra_write})"
        read = f"({tenant_match}) OR ({self.extra_read})" if self.extra_read else tenant_match
        insert = f"({tenant_match}) OR tenant_id IS NULL" if self.platform_rows else tenant_match
        statements = [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY tenant_read ON {table} FOR SELECT USING ({read})",
            f"CREATE POLICY tenant_insert ON {table} FOR INSERT WITH CHECK ({insert})",
        ]
        if not self.append_only:
            statements += [
                f"CREATE POLICY tenant_update ON {table} FOR UPDATE USING ({tenant_match}) WITH CHECK ({tenant_match})",
                f"CREATE POLICY tenant_delete ON {table} FOR DELETE USING ({tenant_match})",
            ]
        for sql in statements:
            schema_editor.execute(sql)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return
        table = schema_editor.quote_name(self._table(app_label, from_state))
        for name in ("tenant_read", "tenant_insert", "tenant_update", "tenant_delete"):
            schema_editor.execute(f"DROP POLICY IF EXISTS {name} ON {table}")
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")

    def describe(self):
        return f"Enable row-level security on {self.model_name}"


def install_functions(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTIONS_SQL)


def remove_functions(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS caretext_current_tenant(); DROP FUNCTION IF EXISTS caretext_current_user();")


def postgres_only(sql: str):
    """A RunPython function that runs ``sql`` on PostgreSQL and does nothing on SQLite (the demo).
    The SQL is sent without parameters, so ``%`` in PL/pgSQL format strings is literal."""

    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run
