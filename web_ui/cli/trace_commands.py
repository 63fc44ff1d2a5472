"""``flowkit trace prune``: apply the trace retention setting."""

from __future__ import annotations

import argparse
from typing import Any

from web_ui.cli.console import console


def register(commands: Any) -> None:
    trace = commands.add_parser("trace", help="run traces (events, resource samples)").add_subparsers(
        dest="trace_command", required=True, metavar="SUBCOMMAND"
    )
    prune = trace.add_parser(
        "prune",
        help="delete the events and resource samples of runs that finished long ago "
        "(runs, node results and per-execution figures stay); run it daily, e.g. from cron",
    )
    prune.add_argument(
        "--older-than-days",
        type=int,
        default=None,
        metavar="DAYS",
        help="default: FLOWKIT_TRACE_RETENTION_DAYS (30)",
    )
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted")
    prune.set_defaults(handler=prune_traces)


def prune_traces(args: argparse.Namespace) -> int:
    from django.conf import settings

    from control_unit.trace_retention import prune_traces

    days = settings.FLOWKIT_TRACE_RETENTION_DAYS if args.older_than_days is None else args.older_than_days
    if days < 1:
        console.print("[red]--older-than-days must be at least 1[/red]")
        return 2
    report = prune_traces(days, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    console.print(
        f"{verb} {report.events:,} events and {report.samples:,} resource samples "
        f"of {report.runs:,} runs finished more than {days} days ago"
    )
    return 0
