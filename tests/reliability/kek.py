"""A KEK provider that can be made unavailable from outside the process, as a KMS outage is.

``PHI_KEK_PROVIDER=tests.reliability.kek.SwitchableKekProvider`` with ``CARETEXT_KEK_DOWN_FILE``
naming a file: while that file exists, every wrap and unwrap raises ``KekError`` (what a KMS
provider raises when its service does not answer). The test process and the worker share the
file, so one ``touch`` takes the key service down for both.
"""

from __future__ import annotations

import os

from phi.errors import KekError
from phi.kek import EnvKekProvider

DOWN_FILE_ENV = "CARETEXT_KEK_DOWN_FILE"


class SwitchableKekProvider(EnvKekProvider):
    def _answer(self) -> None:
        flag = os.environ.get(DOWN_FILE_ENV, "")
        if flag and os.path.exists(flag):
            raise KekError("the key service is unavailable")

    def current_version(self) -> int:
        self._answer()
        return super().current_version()

    def wrap(self, key: bytes, *, aad: bytes) -> tuple[int, bytes]:
        self._answer()
        return super().wrap(key, aad=aad)

    def unwrap(self, version: int, wrapped: bytes, *, aad: bytes) -> bytes:
        self._answer()
        return super().unwrap(version, wrapped, aad=aad)
