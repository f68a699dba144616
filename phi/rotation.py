"""Re-encrypt a tenant's (or the platform's) values under its newest data-key version.

Batches of rows are locked (``select_for_update``) while rewritten, so a concurrent edit is
never overwritten with the old value; readers keep working throughout because old key
versions stay readable until no row uses them. Re-running continues where a stopped run
left off: rows already on the newest version are skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from django.apps import apps
from django.db import transaction

from phi import keys
from phi.envelope import blob_key_version, open_sealed, seal
from phi.fields import EncryptedField, Sealed
from phi.models import KeyPurpose, KeyState


def encrypted_models(key_scope: str) -> list[tuple[type, list[EncryptedField]]]:
    found = []
    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedField) and f.key_scope == key_scope]
        if fields:
            found.append((model, fields))
    return found


def _queryset(model, tenant_id):
    if tenant_id is keys.PLATFORM:
        return model._default_manager.all()
    return model._default_manager.filter(tenant_id=tenant_id)  # scoped manager: in scope already


def _old_version_rows(model, fields, tenant_id, active: int) -> int:
    count = 0
    for row in _queryset(model, tenant_id).values_list(*(f.attname for f in fields)).iterator(chunk_size=2000):
        count += any(v is not None and blob_key_version(v.blob) != active for v in row)
    return count


def _rewrite_batch(model, fields, tenant_id, pks, active: int) -> int:
    table = model._meta.db_table
    id_fields = sorted({f.row_id_field for f in fields})
    rewritten = 0
    with transaction.atomic():
        rows = _queryset(model, tenant_id).select_for_update().filter(pk__in=pks).values(
            "pk", *id_fields, *(f.attname for f in fields))
        for row in rows:
            pk = row["pk"]
            changes = {}
            for field in fields:
                value, row_id = row[field.attname], row[field.row_id_field]
                if value is None or blob_key_version(value.blob) == active:
                    continue
                plain = open_sealed(tenant_id=tenant_id, table=table, column=field.column, row_id=row_id,
                                    blob=value.blob)
                changes[field.attname] = Sealed(seal(tenant_id=tenant_id, table=table, column=field.column,
                                                     row_id=row_id, plaintext=plain))
            if changes:
                _queryset(model, tenant_id).filter(pk=pk).update(**changes)
                rewritten += 1
    return rewritten


def reencrypt(tenant_id, *, batch_size: int = 500, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Rewrite every value not on the active version; retire versions no row uses any more."""
    scope = "platform" if tenant_id is keys.PLATFORM else "tenant"
    active = keys.active_version(tenant_id, KeyPurpose.DATA)
    total = 0
    remaining = 0
    for model, fields in encrypted_models(scope):
        label = model._meta.label
        pks = list(_queryset(model, tenant_id).order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(pks), batch_size):
            total += _rewrite_batch(model, fields, tenant_id, pks[start:start + batch_size], active)
            progress(f"{label}: {min(start + batch_size, len(pks))}/{len(pks)} rows checked, {total} rewritten")
        remaining += _old_version_rows(model, fields, tenant_id, active)
    retired = []
    if remaining == 0:
        old = [v for v, state in keys.versions_in_use_summary(tenant_id) if v != active and state == KeyState.ACTIVE]
        keys.retire(tenant_id, KeyPurpose.DATA, old)
        retired = old
    return {"active_version": active, "rewritten": total, "remaining_old": remaining, "retired": retired}
