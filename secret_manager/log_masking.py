"""The host's own log lines pass through the maskers of the executions in progress.

A worker logs about the nodes it runs: a runner failure with its traceback, a refused
frame, a database error quoting a value. None of those should hold a secret, and the
runner takes care that they do not (it names types, never texts); this is the net
under that care. While an execution runs (``masking_logs``), every line this process
logs, from any thread, is masked with its secrets before a handler writes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from secret_manager.masking import Masker

_lock = threading.Lock()
_active: dict[int, Masker] = {}


@contextmanager
def masking_logs(masker: Masker) -> Iterator[None]:
    """Mask this process's log lines with ``masker`` until the block ends."""
    key = id(masker)
    with _lock:
        _active[key] = masker
    try:
        yield
    finally:
        with _lock:
            _active.pop(key, None)


class MaskingFilter(logging.Filter):
    """A handler filter: the record's message, traceback and stack, masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _lock:
            maskers = list(_active.values())
        if not maskers:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for masker in maskers:
            message = masker.mask_text(message)
            if record.exc_text:
                record.exc_text = masker.mask_text(record.exc_text)
            if record.stack_info:
                record.stack_info = masker.mask_text(record.stack_info)
        record.msg, record.args = message, None
        return True


def install(logger: logging.Logger) -> None:
    """Put the filter on each of ``logger``'s handlers (once)."""
    for handler in logger.handlers:
        if not any(isinstance(existing, MaskingFilter) for existing in handler.filters):
            handler.addFilter(MaskingFilter())
