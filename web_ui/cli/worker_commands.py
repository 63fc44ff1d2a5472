"""``flowkit workers list|queues|drain``: the Celery workers of an installation."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from web_ui.cli.console import console, errors


def register(commands: Any) -> None:
    workers = commands.add_parser("workers", help="the Celery workers that run nodes").add_subparsers(
        dest="workers_command", required=True, metavar="SUBCOMMAND"
    )
    listing = workers.add_parser("list", help="every known worker: state, capabilities, pool, queue depth")
    listing.set_defaults(handler=list_workers)
    queues = workers.add_parser(
        "queues",
        help="the queues a worker with these capabilities consumes (comma separated, for celery --queues)",
    )
    queues.add_argument(
        "--capabilities",
        default=None,
        help="comma-separated capabilities (default: FLOWKIT_WORKER_CAPABILITIES)",
    )
    queues.set_defaults(handler=print_queues)
    drain = workers.add_parser(
        "drain", help="stop a worker taking nodes; it finishes the ones it runs, then exits"
    )
    drain.add_argument("name", help="the worker's name, as `flowkit workers list` shows it")
    drain.set_defaults(handler=drain_worker)


def print_queues(args: argparse.Namespace) -> int:
    from django.conf import settings

    from control_unit.routing import CapabilityError, parse_capabilities, worker_queues

    try:
        capabilities = (
            settings.FLOWKIT_WORKER_CAPABILITIES
            if args.capabilities is None
            else parse_capabilities(args.capabilities)
        )
    except CapabilityError as exc:
        errors.print(f"[red]--capabilities:[/red] {escape(str(exc))}")
        return 2
    print(",".join(worker_queues(settings.FLOWKIT_CELERY_QUEUE, capabilities)))
    return 0


def list_workers(args: argparse.Namespace) -> int:
    from trace_monitor.models import WorkerStatus
    from trace_monitor.resource_monitor import worker_frame

    table = Table("worker", "state", "capabilities", "pool", "queue depth", "NPUs", "last seen")
    for worker in WorkerStatus.objects.all():
        frame = worker_frame(worker)
        bounds = f"{frame['concurrency_min']}-{frame['concurrency']}" if frame["concurrency_min"] else ""
        table.add_row(
            frame["name"],
            frame["state"],
            ", ".join(frame["capabilities"]) or "-",
            f"{frame['pool_size']}" + (f" ({bounds})" if bounds else ""),
            str(frame["queue_depth"]),
            str(len(frame["npus"])),
            frame["last_seen"][:19],
        )
    console.print(table)
    return 0


def drain_worker(args: argparse.Namespace) -> int:
    from node_runner.drain import DrainError, do_drain_worker

    try:
        order = do_drain_worker(args.name, via="cli")
    except DrainError as exc:
        errors.print(f"[red]cannot drain:[/red] {escape(str(exc))}")
        return 1
    console.print(
        f"{order.worker} no longer takes nodes from {', '.join(order.queues)}; it finishes the nodes it "
        "runs, then exits (its state shows draining, then stopped)",
        markup=False,
    )
    return 0
