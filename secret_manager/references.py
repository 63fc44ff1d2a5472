"""Secret references in node code: ``<<<secret::NAME>>>``.

The node runner resolves exactly the names found here; the NPU runtime substitutes
them inside string literals (npu_image/flowkit/_secrets.py). Both must agree on what a
reference is, so REFERENCE is kept identical to the runtime's (a unit test compares
the two patterns).
"""

from __future__ import annotations

import re

from secret_manager.errors import InvalidSecretName

MAX_NAME_CHARS = 128
REFERENCE = re.compile(r"<<<secret::([A-Za-z_][A-Za-z0-9_]{0,127})>>>")
# \A and \Z rather than ^ and $: "$" would accept a name with a trailing newline.
NAME_PATTERN = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")


def referenced_names(code: str) -> list[str]:
    """Every distinct secret name referenced in ``code``, in order of first appearance.

    The whole text is scanned, not only string literals: resolving a name that the
    runtime then leaves unused costs nothing, while missing one would fail the node.
    """
    return list(dict.fromkeys(match.group(1) for match in REFERENCE.finditer(code)))


def validate_name(name: str) -> None:
    """Raise InvalidSecretName, saying what is wrong, unless ``name`` is a valid name."""
    if not isinstance(name, str):
        raise InvalidSecretName(f"a secret name must be text, not {type(name).__name__}")
    if NAME_PATTERN.match(name):
        return
    rule = f"a name is 1 to {MAX_NAME_CHARS} ASCII letters, digits or _, not starting with a digit"
    if not name:
        raise InvalidSecretName(f"a secret name cannot be empty: {rule}")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidSecretName(f"a secret name is {len(name)} characters long: {rule}")
    if name[0].isdigit():
        raise InvalidSecretName(f"secret name {name!r} starts with a digit: {rule}")
    bad = next(char for char in name if not _NAME_CHAR.fullmatch(char))
    raise InvalidSecretName(f"secret name {name!r} contains {bad!r}: {rule}")
