"""What PostgreSQL can store: its jsonb type refuses the NUL character and unpaired
UTF-16 surrogates, both of which a node can produce (binary junk on stdout, a
hostile frame). Text meant for people is cleaned; outputs, which are data, are
refused with an error naming the port rather than silently changed."""

from __future__ import annotations

import re
from typing import Any

# NUL and the surrogate block: no text column, jsonb value or UTF-8 string holds them.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    return UNSTORABLE.sub(REPLACEMENT, text)


def clean(value: Any) -> Any:
    """``value`` with every string (keys included) cleaned."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(key)): clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean(item) for item in value]
    return value


def unstorable_path(value: Any, path: str = "") -> str | None:
    """Where in ``value`` a string PostgreSQL cannot store sits (``""`` is the top), or None."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, str):
            if UNSTORABLE.search(current):
                return where
        elif isinstance(current, dict):
            for key, item in current.items():
                if UNSTORABLE.search(str(key)):
                    return f"{where}.{key!r}"
                stack.append((item, f"{where}[{key!r}]"))
        elif isinstance(current, list):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(current))
    return None
