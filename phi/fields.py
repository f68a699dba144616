"""Encrypted model fields. Declare PHI columns only with these (R10).

The value in the database is an envelope (``phi.envelope``); on the model instance it is the
plain Python value. Decryption happens on first attribute access, because it needs the row's
tenant and id; rows that are listed but whose PHI is never read are never decrypted.

Encrypted columns cannot be filtered or ordered on: look rows up by a blind-index column.
Saving re-encrypts only fields whose value was assigned; untouched ciphertext is written back
as it was.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.db import models
from django.db.models.query_utils import DeferredAttribute

from phi.envelope import open_sealed, open_sealed_many, seal
from phi.errors import EncryptedLookupError


class Sealed:
    """Ciphertext as loaded, not yet opened. Shows nothing in reprs or logs."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes):
        self.blob = blob

    def __repr__(self) -> str:
        return "<Sealed>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Sealed) and other.blob == self.blob

    __hash__ = None


class _EncryptedAttribute(DeferredAttribute):
    """A data descriptor: every read goes through here, so sealed values open lazily."""

    def __get__(self, instance, cls=None):
        if instance is None:
            return self
        value = super().__get__(instance, cls)  # loads a deferred column if needed
        if isinstance(value, Sealed):
            value = self.field.open(instance, value)
            instance.__dict__[self.field.attname] = value
        return value

    def __set__(self, instance, value) -> None:
        instance.__dict__[self.field.attname] = value


class EncryptedField(models.BinaryField):
    """Base: subclasses convert their Python type to and from bytes."""

    descriptor_class = _EncryptedAttribute

    def __init__(self, *args, key_scope: str = "tenant", row_id_field: str = "pk", **kwargs):
        """``row_id_field`` names the attribute that identifies the row in the associated data;
        it must be set before the first save (UUID primary keys are; otherwise a UUID column)."""
        if key_scope not in {"tenant", "platform"}:
            raise ValueError("key_scope is 'tenant' or 'platform'")
        self.key_scope = key_scope
        self.row_id_field = row_id_field
        kwargs.setdefault("editable", True)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.key_scope != "tenant":
            kwargs["key_scope"] = self.key_scope
        if self.row_id_field != "pk":
            kwargs["row_id_field"] = self.row_id_field
        kwargs.pop("editable", None)
        return name, path, args, kwargs

    # --- conversions, per subclass ---
    def to_bytes(self, value: Any) -> bytes:
        raise NotImplementedError

    def from_bytes(self, data: bytes) -> Any:
        raise NotImplementedError

    # --- binding to a row ---
    def _owner(self, instance):
        if self.key_scope == "platform":
            return None
        tenant_id = getattr(instance, "tenant_id", None)
        if tenant_id is None:
            from phi.errors import KeyUnavailable

            raise KeyUnavailable(f"{instance._meta.db_table}.{self.column} needs the row's tenant before encrypting")
        return tenant_id

    def seal_for(self, instance, value: Any) -> bytes:
        return seal(tenant_id=self._owner(instance), table=instance._meta.db_table, column=self.column,
                    row_id=self.row_id(instance), plaintext=self.to_bytes(value))

    def row_id(self, instance):
        return getattr(instance, self.row_id_field)

    def open(self, instance, sealed: Sealed) -> Any:
        data = open_sealed(tenant_id=self._owner(instance), table=instance._meta.db_table, column=self.column,
                           row_id=self.row_id(instance), blob=sealed.blob)
        return self.from_bytes(data)

    def open_many(self, instances) -> None:
        """Open this field now on every one of ``instances`` (rows of one model) that holds it
        sealed, as reading it on each would: for a page that shows it on every row listed. The
        key of each tenant and version is looked up once, not per row (``open_sealed_many``)."""
        name = self.attname
        groups: dict = {}
        for instance in instances:
            value = instance.__dict__.get(name)
            if isinstance(value, Sealed):
                groups.setdefault(self._owner(instance), []).append((instance, value.blob))
        for owner, rows in groups.items():
            opened = open_sealed_many(tenant_id=owner, table=rows[0][0]._meta.db_table, column=self.column,
                                      items=[(self.row_id(instance), blob) for instance, blob in rows])
            for (instance, _), data in zip(rows, opened, strict=True):
                instance.__dict__[name] = self.from_bytes(data)

    # --- Django hooks ---
    def from_db_value(self, value, expression, connection):
        return None if value is None else Sealed(bytes(value))

    def pre_save(self, model_instance, add):
        value = model_instance.__dict__.get(self.attname)
        if value is None or isinstance(value, Sealed):
            return value
        if self.row_id(model_instance) is None:
            raise EncryptedLookupError("encrypted fields need the row id before saving (use UUID ids)")
        return Sealed(self.seal_for(model_instance, value))

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        if isinstance(value, Sealed):
            value = value.blob
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise EncryptedLookupError(f"{self.model.__name__}.{self.name} is encrypted: it cannot be "
                                       f"compared or filtered; use its blind index")
        return super().get_db_prep_value(bytes(value), connection, prepared)

    def get_lookup(self, lookup_name):
        if lookup_name != "isnull":
            raise EncryptedLookupError(f"encrypted field {self.name} supports only __isnull lookups")
        return super().get_lookup(lookup_name)

    def value_to_string(self, obj):
        return "<encrypted>"

    def formfield(self, **kwargs):
        return None  # forms declare their own typed fields; never the raw column


class EncryptedTextField(EncryptedField):
    def to_bytes(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"{self.name} expects text")
        return value.encode("utf-8")

    def from_bytes(self, data: bytes) -> str:
        return data.decode("utf-8")

    def get_default(self):
        # A blank, non-null text field starts as "" (sealed on save), like a CharField. Django's
        # BinaryField would start it as b"". (The schema default for existing rows stays b"": an
        # empty blob, not a sealed value; a migration adding such a field must seal those rows.)
        if not self.has_default() and self.blank and not self.null:
            return ""
        return super().get_default()


class EncryptedDateField(EncryptedField):
    def to_bytes(self, value: Any) -> bytes:
        if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
            raise TypeError(f"{self.name} expects a date")
        return value.isoformat().encode()

    def from_bytes(self, data: bytes) -> datetime.date:
        return datetime.date.fromisoformat(data.decode())


class EncryptedJSONField(EncryptedField):
    def to_bytes(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")

    def from_bytes(self, data: bytes) -> Any:
        return json.loads(data)
