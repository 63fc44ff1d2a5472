"""Errors of the secret vault.

Every message names secrets, never shows a value: these messages reach logs, API
responses, node errors and the audit log.
"""

from __future__ import annotations


class SecretError(Exception):
    """Base of every secret vault error; callers catch this to report one clearly."""


class InvalidSecretName(SecretError):
    pass


class InvalidSecretValue(SecretError):
    pass


class DuplicateSecret(SecretError):
    pass


class UnknownSecret(SecretError):
    """One or more secrets are not defined. The message names the first; ``names``
    holds all of them, in the order they were asked for."""

    def __init__(self, name: str, names: list[str] | None = None) -> None:
        super().__init__(f"secret {name} is not defined")
        self.names = list(names) if names else [name]


class SecretDecryptionError(SecretError):
    pass


class AuditLogIsAppendOnly(SecretError):
    pass
