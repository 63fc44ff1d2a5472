"""The node SDK: ``Node`` gives a node its inputs and runs its ``main``."""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from . import _job
from ._result import NodeResultError, check_result

__all__ = ["Node", "NodeResultError"]


class Node:
    def __init__(self) -> None:
        self._job = _job.current()

    @property
    def id(self) -> str:
        return self._job.node_id

    @property
    def label(self) -> str:
        return self._job.label

    @property
    def attempt(self) -> int:
        """1 for the first try, 2 for the first retry, and so on."""
        return self._job.attempt

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of this node in this run, different in any other
        run. Send it with side effects (an ``Idempotency-Key`` header, a unique column)
        so that the retry of an attempt whose worker was lost does not apply them twice."""
        return self._job.idempotency_key

    def get_inputs(self) -> dict[str, Any]:
        """The values that arrived on this node's input ports, by port name."""
        return copy.deepcopy(self._job.inputs)

    def register_main(self, main: Callable[[], Any]) -> Callable[[], Any]:
        """Register the node's entry point; async and plain functions both work."""
        if not callable(main):
            raise TypeError(f"register_main() takes a function, got {type(main).__name__}")
        self._job.main = main
        return main

    def run(self) -> None:
        job = self._job
        if job.main is None:
            raise NodeResultError("node.run() was called before node.register_main(main)")
        if job.ran:
            raise NodeResultError("node.run() was called twice; a node runs its main once")
        job.ran = True
        value = job.main()
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        job.result = check_result(value, job.max_output_bytes)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
