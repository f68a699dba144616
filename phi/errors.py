"""PHI crypto errors. Messages name tables, columns, row ids and key versions — never values."""


class PhiError(Exception):
    """Base: a PHI value could not be protected or revealed. Fail closed."""


class KeyUnavailable(PhiError):
    """The key needed is missing, destroyed, or belongs to a tenant not in scope."""


class DecryptionError(PhiError):
    """Ciphertext failed authentication: wrong key, tampering, or moved to another row/tenant."""


class KekError(PhiError):
    """The key-encryption key is missing, malformed, or lacks a version that wrapped a key."""


class EncryptedLookupError(PhiError, TypeError):
    """Encrypted columns cannot be filtered on; use the blind-index column."""
