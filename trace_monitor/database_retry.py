"""Riding out a database that is briefly unreachable (a restart, a dropped
connection) in the runner and its trace writer, where giving up would strand a node in
"running". It lives here, the lower of the two layers that use it."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

T = TypeVar("T")
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
DATABASE_ATTEMPTS = 8


def forget_connection() -> None:
    """Drop this thread's connection, so that the next query opens a new one."""
    with contextlib.suppress(*DATABASE_UNAVAILABLE):
        connection.close()


def with_database_retry(
    action: Callable[[], T],
    *,
    what: str,
    attempts: int = DATABASE_ATTEMPTS,
    first_delay_s: float = 0.5,
    max_delay_s: float = 8.0,
) -> T:
    """``action()``, tried again on a fresh connection while the database is
    unreachable, for about half a minute in all (0.5, 1, 2, 4, 8, 8, 8 s apart)."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except DATABASE_UNAVAILABLE as exc:
            forget_connection()
            if attempt == attempts:
                raise
            log.warning("%s: the database is unreachable (%s); trying again in %g s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
    raise AssertionError("unreachable")
