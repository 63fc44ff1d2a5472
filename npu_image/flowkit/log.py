"""The node logger. Its methods may be awaited (as in the docs) or just called."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from . import _channel, _job

LEVELS = ("debug", "info", "warning", "error")


class _Logged:
    """Already done when created: awaiting it returns at once, and forgetting to
    await it loses nothing (unlike a coroutine)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # makes this a generator that finishes at once


_LOGGED = _Logged()


class Logger:
    def __init__(self, node: Any = None) -> None:
        self._node = node

    def debug(self, message: object, *args: object) -> _Logged:
        return self._log("debug", message, args)

    def info(self, message: object, *args: object) -> _Logged:
        return self._log("info", message, args)

    def warning(self, message: object, *args: object) -> _Logged:
        return self._log("warning", message, args)

    def error(self, message: object, *args: object) -> _Logged:
        return self._log("error", message, args)

    def _log(self, level: str, message: object, args: tuple[object, ...]) -> _Logged:
        text = str(message) % args if args else str(message)
        budget = _job.current().budget
        encoded = text.encode("utf-8", "replace")
        event: dict[str, Any] = {"type": "log", "level": level, "stream": "logger"}
        if len(encoded) > budget.max_line_bytes:
            text = encoded[: budget.max_line_bytes].decode("utf-8", "ignore")
            event["truncated"] = True
        if budget.admit(len(encoded)):
            event["message"] = text
            _channel.current().emit(event)
        return _LOGGED
