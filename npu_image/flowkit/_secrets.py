"""Put secret values into a node's code as data, never as code.

The substitution happens on the syntax tree: only string and bytes constants
(f-string parts included) are rewritten, so a value full of quotes, backslashes or
``"; import os`` stays a string. The source shown in tracebacks keeps the reference,
not the value.
"""

from __future__ import annotations

import ast
import re

# Keep in step with secret_manager/references.py (a unit test compares the two).
REFERENCE = re.compile(r"<<<secret::([A-Za-z_][A-Za-z0-9_]{0,127})>>>")
# Code without it holds no reference (in any string or bytes literal) to substitute.
REFERENCE_MARK = "<<<secret::"


class SecretNotDefined(Exception):
    pass


class _Substitute(ast.NodeTransformer):
    def __init__(self, secrets: dict[str, str]) -> None:
        self._secrets = secrets

    def _value(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in self._secrets:
            raise SecretNotDefined(f"secret {name} is not defined")
        return self._secrets[name]

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if isinstance(node.value, str) and REFERENCE_MARK in node.value:
            node.value = REFERENCE.sub(self._value, node.value)
        elif isinstance(node.value, bytes) and REFERENCE_MARK.encode() in node.value:
            text = node.value.decode("utf-8", "surrogateescape")
            node.value = REFERENCE.sub(self._value, text).encode("utf-8", "surrogateescape")
        return node


def substitute_secrets(tree: ast.Module, secrets: dict[str, str]) -> ast.Module:
    _Substitute(secrets).visit(tree)
    return tree
