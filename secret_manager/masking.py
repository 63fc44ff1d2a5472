"""Mask secret values, and their common encodings, in everything a node produces.

A Masker is built once per node execution from the resolved values and applied to
logs, outputs, status messages and errors before anything is stored or sent. Each
occurrence of a value, or of one of these forms of it, becomes ``***``:

- the raw text;
- base64 of its UTF-8 bytes, standard and URL-safe, with and without ``=`` padding;
- URL encoding: ``urllib.parse.quote(value, safe="")`` and ``quote_plus``;
- hex of its UTF-8 bytes, lower and upper case;
- the inside of a JSON string: ``json.dumps(value)[1:-1]``, ASCII-escaped and not;
- the inside of Python's ``repr`` and ``ascii`` of the value as str and as UTF-8 bytes,
  with its quotes escaped and not (``print(d)`` of a dict, ``f"{key!r}"``,
  ``raise KeyError(key)``, a bytes value in a traceback): what ``repr`` would write when
  the value sits alone in its quotes, and when it sits in a longer text that made
  ``repr`` pick the other quotes;
- each line of a value that spans lines (a PEM key printed line by line arrives as one
  log line each), when the line is at least MIN_MASKED_LENGTH long.

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

A line the NPU cut short may end in the first part of a form: ``mask_cut_line`` masks
that too (the runner then cuts the masked line to its final length).

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
    forms = {
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
    for delimiter in ("'", ""):
        forms.add(python_escaped(value, quote_char=delimiter, ascii_only=False))
        forms.add(python_escaped(value, quote_char=delimiter, ascii_only=True))
        forms.add(python_escaped_bytes(raw, quote_char=delimiter))
    return forms


def line_forms(value: str) -> set[str]:
    """The lines of a value that spans lines, each long enough to be masked alone."""
    lines = {line.rstrip("\r") for line in value.split("\n")} if "\n" in value else set()
    return {line for line in lines if len(line) >= MIN_MASKED_LENGTH}


def python_escaped(value: str, *, quote_char: str, ascii_only: bool) -> str:
    """The inside of ``repr(value)`` (``ascii(value)`` when ``ascii_only``) as Python
    writes it between ``quote_char`` quotes (``""``: quotes the value does not hold)."""
    out = []
    for char in value:
        code = ord(char)
        if char == "\\" or (quote_char and char == quote_char):
            out.append("\\" + char)
        elif char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char.isprintable() and not (ascii_only and code > 0x7F):
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def python_escaped_bytes(raw: bytes, *, quote_char: str) -> str:
    """The inside of ``repr(raw)`` between ``quote_char`` quotes: each byte as the
    character of its value, written as ``ascii`` writes it."""
    return python_escaped(raw.decode("latin-1"), quote_char=quote_char, ascii_only=True)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def masked_forms(values: Iterable[str]) -> list[str]:
    """Every string a Masker built from ``values`` replaces, longest first."""
    forms: set[str] = set()
    for value in values:
        if not value or value in MASK:
            continue
        if len(value) < MIN_MASKED_LENGTH:
            forms.add(value)
            continue
        forms.update(encoded_forms(value))
        forms.update(line_forms(value))
    forms.discard("")
    return sorted(forms, key=lambda form: (-len(form), form))


class Masker:
    """Replaces the given secret values, and their common encodings, with ``***``."""

    def __init__(self, values: Iterable[str]) -> None:
        forms = masked_forms(values)
        self._forms = forms
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

    def mask_cut_line(self, text: str) -> str:
        """``mask_text`` for a line cut short at its end: a first part of a form there
        is masked too (the rest of the form was cut away)."""
        masked = self.mask_text(text)
        if self._pattern is None:
            return masked
        longest = 0
        for form in self._forms:
            longest = max(longest, _overlap(masked, form))
        return masked[: len(masked) - longest] + MASK if longest else masked

    def mask(self, value: Any) -> Any:
        """``value`` with every string masked, in dicts (keys too), lists and tuples
        however deep (no recursion). The input is never modified."""
        if self._pattern is None:
            return value
        root: list[Any] = [None]
        # (value, container to put its masked copy in, where); tuples are built as
        # lists and frozen once their items are done (a "freeze" entry, below theirs).
        work: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while work:
            current, into, where = work.pop()
            if current is _FREEZE:
                into[where] = tuple(into[where])
                continue
            if isinstance(current, dict):
                copy: Any = {}
                items = [(self._mask_key(key), item) for key, item in current.items()]
                # Filled in order, so that of two keys masked alike the later one wins.
                work.extend((item, copy, key) for key, item in reversed(items))
            elif isinstance(current, list | tuple):
                copy = [None] * len(current)
                if isinstance(current, tuple):
                    work.append((_FREEZE, into, where))
                work.extend((item, copy, index) for index, item in reversed(list(enumerate(current))))
            else:
                copy = self._mask_scalar(current)
            into[where] = copy
        return root[0]

    def _mask_key(self, key: Any) -> Any:
        return self.mask(key) if isinstance(key, tuple) else self._mask_scalar(key)

    def _mask_scalar(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and self._numeric_forms:
            try:
                text = repr(value)
            except ValueError:  # an int past Python's digit limit has no text to leak
                return value
            if any(form in text for form in self._numeric_forms):
                return MASK
        return value


_FREEZE = object()


def _overlap(text: str, form: str) -> int:
    """The length of the longest end of ``text`` that begins ``form`` (short of all of it)."""
    start = max(0, len(text) - len(form) + 1)
    while (start := text.find(form[0], start)) != -1:
        if form.startswith(text[start:]):
            return len(text) - start
        start += 1
    return 0
