from django.db import migrations

from audit.dbsql import install_auditlog_tenant, remove_auditlog_tenant

AUDITLOG_RLS = """
ALTER TABLE auditlog_logentry ENABLE ROW LEVEL SECURITY;
ALTER TABLE auditlog_logentry FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON auditlog_logentry FOR SELECT
    USING (tenant_id = caretext_current_tenant() OR (tenant_id IS NULL AND caretext_current_tenant() IS NULL));
CREATE POLICY tenant_insert ON auditlog_logentry FOR INSERT
    WITH CHECK (tenant_id = caretext_current_tenant() OR tenant_id IS NULL);
"""


def install_rls(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(AUDITLOG_RLS)


def remove_rls(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE auditlog_logentry DISABLE ROW LEVEL SECURITY; "
                              "DROP POLICY IF EXISTS tenant_read ON auditlog_logentry; "
                              "DROP POLICY IF EXISTS tenant_insert ON auditlog_logentry;")


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        ("auditlog", "0017_add_actor_email"),
    ]

    operations = [
        migrations.RunPython(install_auditlog_tenant, remove_auditlog_tenant),
        migrations.RunPython(install_rls, remove_rls),
    ]
