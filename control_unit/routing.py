"""Capability routing: which Celery queue a node goes to, and which queues a worker
consumes.

A node that asks for capabilities (``"requires": ["gpu"]`` in the pipeline document)
is sent to a queue named after the base queue and its sorted capability set
(``flowkit@gpu``, ``flowkit@gpu+network``); a node that asks for none goes to the base
queue. A worker declaring capabilities C consumes the queue of every subset of C, the
empty set (the base queue) included, so it takes exactly the nodes whose wishes it
satisfies, and Celery's own queues do the routing: nothing here picks a worker.

A worker consumes 2**len(C) queues, so C is bounded by MAX_CAPABILITIES (16 queues at
most); a node asking for more than that could never be taken, and validation refuses it.

Pure: no Django, no broker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import combinations

CAPABILITY_PATTERN = r"[a-z][a-z0-9_-]{0,31}"
MAX_CAPABILITIES = 4
# Not a character of CAPABILITY_PATTERN, so a queue name maps back to one set.
QUEUE_SEPARATOR = "@"
CAPABILITY_JOINER = "+"
CAPABILITY_RULE = "a capability is 1 to 32 lower-case letters, digits, '_' or '-', starting with a letter"

_CAPABILITY_RE = re.compile(CAPABILITY_PATTERN)


class CapabilityError(ValueError):
    pass


def is_capability(name: object) -> bool:
    return isinstance(name, str) and _CAPABILITY_RE.fullmatch(name) is not None


def capability_set(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` checked, without duplicates, sorted: the canonical form of a set."""
    unique = sorted(set(names))
    for name in unique:
        if not is_capability(name):
            raise CapabilityError(f"{name!r} is not a valid capability: {CAPABILITY_RULE}")
    if len(unique) > MAX_CAPABILITIES:
        raise CapabilityError(
            f"{len(unique)} capabilities ({', '.join(unique)}), but at most {MAX_CAPABILITIES} are allowed"
        )
    return tuple(unique)


def parse_capabilities(text: str) -> tuple[str, ...]:
    """A worker's FLOWKIT_WORKER_CAPABILITIES value ("gpu, network") as a set."""
    return capability_set(part.strip() for part in text.split(",") if part.strip())


def queue_for(base: str, requires: Iterable[str]) -> str:
    """The queue of a node that asks for ``requires``."""
    wanted = capability_set(requires)
    if not wanted:
        return base
    return f"{base}{QUEUE_SEPARATOR}{CAPABILITY_JOINER.join(wanted)}"


def worker_queues(base: str, capabilities: Iterable[str]) -> list[str]:
    """Every queue a worker with ``capabilities`` consumes: one per subset, the base
    queue first, then by size; 2**n queues for n capabilities."""
    offered = capability_set(capabilities)
    return [
        queue_for(base, subset) for size in range(len(offered) + 1) for subset in combinations(offered, size)
    ]


def satisfies(capabilities: Iterable[str], requires: Iterable[str]) -> bool:
    return set(requires) <= set(capabilities)


def missing_capability_reason(requires: Iterable[str], online: Iterable[Iterable[str]]) -> str | None:
    """Why a node asking for ``requires`` cannot start now, given the capability sets of
    the online (not draining) workers; None when one of them can take it."""
    wanted = capability_set(requires)
    offered = [set(capabilities) for capabilities in online]
    if any(set(wanted) <= capabilities for capabilities in offered):
        return None
    noun = "capability" if len(wanted) == 1 else "capabilities"
    what = f"waiting for a worker with {noun} {', '.join(wanted)}"
    partly = [capabilities & set(wanted) for capabilities in offered if capabilities & set(wanted)]
    if not partly:
        return f"{what}: none is online"
    return f"{what}: no online worker has all of them"
