"""Mask secret values, and their common encodings, in everything a node produces.

A Masker is built once per node execution from the resolved values and applied to
logs, outputs, status messages and errors before anything is stored or sent. Each
occurrence of a value, or of one of these forms of it, becomes ``***``:

- the raw text;
- base64 of its UTF-8 bytes, standard and URL-safe, with and without ``=`` padding;
- URL encoding: ``urllib.parse.quote(value, safe="")`` and ``quote_plus``;
- hex of its UTF-8 bytes, lower and upper case;
- the inside of a JSON string: ``json.dumps(value)[1:-1]``, ASCII-escaped and not.

Limits, on purpose:

- Only the standalone encoding of a value is recognised. Base64 of a value embedded in
  a longer byte stream (``base64(b"user:" + value)``) is aligned differently and shares
  no substring with ``base64(value)``; the same goes for encodings of encodings and for
  base64 wrapped over several lines. Masking is a safety net for honest mistakes, not a
  defence against node code that sets out to exfiltrate a value it was given.
- Values shorter than MIN_MASKED_LENGTH (4) characters have their raw form masked but
  not their encodings: the hex or base64 of one to three characters is a short, common
  sequence, and masking every such sequence would destroy unrelated output. The vault
  refuses values that short at creation (secret_manager.actions), so in practice this
  only concerns Maskers built by hand. Values that are part of the mask itself (``*``,
  ``**``, ``***``) are not masked at all, and an empty value never is.
- A number (int or float, not bool) whose decimal text contains a masked form is
  replaced by ``***`` as a whole: a numeric secret returned as a number would otherwise
  be stored as it is. Other non-string scalars are returned unchanged.
- Dict keys are masked like any string; two keys that both mask to ``***`` collapse
  into one (the later one wins).

All forms of all values are matched by one compiled alternation, longest form first,
so each string is scanned once. Masking a value that contains ``*`` can create a new
occurrence from the mask's own stars (``ab***`` in ``abab***``); only then is the text
scanned again, until nothing matches, so the result never contains a form and masking
twice gives the same result as masking once.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_MASKED_LENGTH = 4
_NUMBER_CHARS = frozenset("0123456789+-.eE")


def encoded_forms(value: str) -> set[str]:
    """The raw value and each of its common encodings (see the module docstring)."""
    # surrogatepass: a Masker must never crash on the text it protects.
    raw = value.encode("utf-8", "surrogatepass")
    standard = base64.b64encode(raw).decode("ascii")
    urlsafe = base64.urlsafe_b64encode(raw).decode("ascii")
    return {
        value,
        standard,
        standard.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
        quote(raw, safe=""),
        quote_plus(raw, safe=""),
        raw.hex(),
        raw.hex().upper(),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }


def masked_forms(values: Iterable[str]) -> list[str]:
    """Every string a Masker built from ``values`` replaces, longest first."""
    forms: set[str] = set()
    for value in values:
        if not value or value in MASK:
            continue
        forms.update(encoded_forms(value) if len(value) >= MIN_MASKED_LENGTH else {value})
    return sorted(forms, key=lambda form: (-len(form), form))


class Masker:
    """Replaces the given secret values, and their common encodings, with ``***``."""

    def __init__(self, values: Iterable[str]) -> None:
        forms = masked_forms(values)
        # Alternatives are tried in order at each position: longest first, so a value's
        # padded base64 is masked whole rather than leaving its "==" behind.
        self._pattern = re.compile("|".join(map(re.escape, forms))) if forms else None
        self._may_recreate = any("*" in form for form in forms)
        self._numeric_forms = tuple(
            form for form in forms if len(form) >= MIN_MASKED_LENGTH and set(form) <= _NUMBER_CHARS
        )

    def __repr__(self) -> str:
        # Never show the values or their forms.
        return f"<Masker of {'some' if self._pattern else 'no'} secrets>"

    def mask_text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        masked, count = self._pattern.subn(MASK, text)
        # A fresh occurrence can only span an inserted mask, so it needs a "*" in a form.
        while count and self._may_recreate:
            masked, count = self._pattern.subn(MASK, masked)
        return masked

    def mask(self, value: Any) -> Any:
        """``value`` with every string masked, recursing into dicts (keys too), lists
        and tuples. The input is never modified."""
        if self._pattern is None:
            return value
        return self._mask(value)

    def _mask(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, dict):
            return {self._mask(key): self._mask(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._mask(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self._mask(item) for item in value)
        if isinstance(value, int | float) and not isinstance(value, bool) and self._numeric_forms:
            try:
                text = repr(value)
            except ValueError:  # an int past Python's digit limit has no text to leak
                return value
            if any(form in text for form in self._numeric_forms):
                return MASK
        return value
