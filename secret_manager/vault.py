"""Encryption at rest: each secret value is a Fernet token made with the primary key.

Keys come from the ``FLOWKIT_SECRET_KEYS`` setting, never from the database: a copy of
the database alone reveals no value. The first key encrypts; every key decrypts, so a
new key can be put first and the secrets re-encrypted under it
(``do_rotate_secret_keys``) before the old key is dropped.

A token is bound to its secret's name: what is encrypted is ``name NUL value``, and
decryption checks the name, so a ciphertext copied onto another secret's row fails
instead of handing out the wrong value. Fernet authenticates every token, so a
tampered token fails too: decrypt() returns the exact value or raises, never garbage.

This module must stay importable from the settings module (load_keys): no models.
"""

from __future__ import annotations

import functools
import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from secret_manager.errors import SecretDecryptionError
from secret_manager.references import validate_name

SETTING = "FLOWKIT_SECRET_KEYS"
GENERATE_HINT = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
# A fixed key, so that a DEBUG site's web process and its workers agree and its secrets
# survive a restart. Anyone can read it here: it protects nothing, hence DEBUG only.
DEBUG_ONLY_KEY = "Zmxvd2tpdC1pbnNlY3VyZS1kZWJ1Zy1vbmx5LWtleSE="
_SEPARATORS = re.compile(r"[,\s]+")
_NAME_END = b"\0"


def generate_key() -> str:
    """A new random Fernet key, as text for FLOWKIT_SECRET_KEYS."""
    return Fernet.generate_key().decode("ascii")


def load_keys(raw: str | None, *, debug: bool) -> list[str]:
    """The keys in ``raw`` (comma- or whitespace-separated, primary first), checked.

    Called by the settings module with the value of FLOWKIT_SECRET_KEYS (or the
    content of FLOWKIT_SECRET_KEYS_FILE). Without keys, only DEBUG runs, on an
    insecure fixed key. Error messages say which key is wrong, never what it is.
    """
    keys = [key for key in _SEPARATORS.split(raw or "") if key]
    if not keys:
        if debug:
            return [DEBUG_ONLY_KEY]
        raise ImproperlyConfigured(
            f"{SETTING} is not set. Set it (or {SETTING}_FILE) to one or more Fernet keys, "
            f"comma separated, the primary first; generate one with: {GENERATE_HINT}. "
            "Only DEBUG=true runs without it."
        )
    _check_keys(keys)
    return keys


def _check_keys(keys: list[str]) -> None:
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            # Not even a prefix of the key: a partial key is still a secret.
            raise ImproperlyConfigured(
                f"{SETTING}: key {position} of {len(keys)} is not a valid Fernet key "
                f"(32 url-safe base64-encoded bytes); generate one with: {GENERATE_HINT}"
            ) from None


def vault() -> MultiFernet:
    """The MultiFernet of the configured keys; the first one encrypts."""
    configured = getattr(settings, SETTING, None)
    if isinstance(configured, str):
        configured = [key for key in _SEPARATORS.split(configured) if key]
    if not configured:
        raise ImproperlyConfigured(
            f"the {SETTING} setting is not set or empty: the secret vault has no key to work with"
        )
    return _multi_fernet(tuple(configured))


@functools.lru_cache(maxsize=8)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    _check_keys(list(keys))
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(name: str, plaintext: str) -> bytes:
    """A token for ``plaintext`` under the primary key, bound to the secret ``name``."""
    validate_name(name)  # a valid name holds no NUL, so the name/value split is unambiguous
    return vault().encrypt(name.encode("ascii") + _NAME_END + plaintext.encode("utf-8"))


def decrypt(name: str, token: bytes | memoryview) -> str:
    """The exact value of secret ``name`` from ``token``; SecretDecryptionError otherwise."""
    try:
        plaintext = vault().decrypt(bytes(token))
    except InvalidToken:
        raise SecretDecryptionError(
            f"secret {name} cannot be decrypted: "
            "its ciphertext was tampered with or no configured key matches"
        ) from None
    bound_name, separator, value = plaintext.partition(_NAME_END)
    if not separator or bound_name != name.encode("utf-8"):
        raise SecretDecryptionError(
            f"secret {name} cannot be decrypted: its ciphertext was made for another secret"
        )
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:  # authentic, so only a bug of ours can get here
        raise SecretDecryptionError(f"secret {name} cannot be decrypted: its value is not UTF-8") from None
