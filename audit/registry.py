"""django-auditlog registration that can't leak PHI (R13).

auditlog copies field values into its own table. ``register_field_history`` always excludes
every encrypted field (auditlog would otherwise decrypt and store the plaintext) and the
secrets named by the caller. Services that use ``QuerySet.update()`` or ``bulk_create()``
bypass auditlog and write their own audit events.
"""

from auditlog.registry import auditlog

from phi.fields import EncryptedField


def register_field_history(model, *, secret_fields: tuple[str, ...] = ()) -> None:
    encrypted = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedField)]
    auditlog.register(model, exclude_fields=[*encrypted, *secret_fields])
