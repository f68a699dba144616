"""Per-request "decryption stubbed out" for the encryption-overhead figures (issue #12, item 7).

A request with ``X-Bench-Phi-Stub: 1`` reads every encrypted field from a process-local memo
keyed by the ciphertext instead of opening it (no key lookup, no AES-GCM), whether the field is
opened on reading it (``EncryptedField.open``) or for a page's rows at once (``open_many``). The memo is filled
by ordinary (real) decryptions, i.e. by the warm-up, so the stubbed page shows the same text
and renders the same bytes. Without the header nothing changes. Bench processes only: this
module is imported only through ``bench.settings``.
"""

from __future__ import annotations

import contextvars

from phi import fields as phi_fields

_stub = contextvars.ContextVar("bench_phi_stub", default=False)
_memo: dict[tuple, object] = {}
_real_open = phi_fields.EncryptedField.open


def _open(self, instance, sealed):
    key = (self.column, sealed.blob)
    if _stub.get():
        try:
            return _memo[key]
        except KeyError:
            pass  # not seen yet: decrypt for real once (counted as a memo miss)
    value = _real_open(self, instance, sealed)
    if len(_memo) < 200_000:
        _memo[key] = value
    return value


def _open_many(self, instances):
    """``open_many`` (a page's rows at once) with the same memo: stubbed, rows whose ciphertext
    was seen read it from there; everything else is opened for real and remembered."""
    name = self.attname
    sealed = [(i, i.__dict__[name].blob) for i in instances if isinstance(i.__dict__.get(name), phi_fields.Sealed)]
    if _stub.get():
        missed = []
        for instance, blob in sealed:
            try:
                instance.__dict__[name] = _memo[(self.column, blob)]
            except KeyError:
                missed.append((instance, blob))
        sealed = missed
    _real_open_many(self, [instance for instance, _ in sealed])
    for instance, blob in sealed:
        if len(_memo) < 200_000:
            _memo[(self.column, blob)] = instance.__dict__[name]


_real_open_many = phi_fields.EncryptedField.open_many
phi_fields.EncryptedField.open = _open
phi_fields.EncryptedField.open_many = _open_many


class PhiStubToggleMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _stub.set(request.headers.get("X-Bench-Phi-Stub") == "1")
        try:
            return self.get_response(request)
        finally:
            _stub.reset(token)
