"""Per-request "decryption stubbed out" for the encryption-overhead figures (issue #12, item 7).

A request with ``X-Bench-Phi-Stub: 1`` reads every encrypted field from a process-local memo
keyed by the ciphertext instead of opening it (no key lookup, no AES-GCM). The memo is filled
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


phi_fields.EncryptedField.open = _open


class PhiStubToggleMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _stub.set(request.headers.get("X-Bench-Phi-Stub") == "1")
        try:
            return self.get_response(request)
        finally:
            _stub.reset(token)
