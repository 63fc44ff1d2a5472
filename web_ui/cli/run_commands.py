"""``flowkit run FILE`` and ``flowkit runs list|show|watch|pause|resume|cancel|restart|rerun``."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from django.utils import timezone
from rich.live import Live
from rich.markup import escape
from rich.table import Column, Table

from web_ui.cli.console import console, errors

POLL_S = 0.25
STATE_STYLES = {
    "pending": "dim", "queued": "cyan", "running": "bold blue", "paused": "yellow", "succeeded": "green",
    "failed": "bold red", "skipped": "dim", "cancelled": "magenta",
}  # fmt: skip


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run", help="run a pipeline file (a document or an export) and optionally watch it"
    )
    run.add_argument("file", type=Path)
    run.add_argument("--input", default="{}", help="the run's JSON input, given to source nodes")
    run.add_argument("--name", help="pipeline name (default: the file's name field, else its stem)")
    run.add_argument(
        "--watch", "-w", action="store_true", help="follow node states live; exit 1 if the run fails"
    )
    run.set_defaults(handler=run_file)

    runs = commands.add_parser("runs", help="list, inspect and control runs").add_subparsers(
        dest="runs_command", required=True, metavar="SUBCOMMAND"
    )
    listing = runs.add_parser("list", help="recent runs")
    listing.add_argument("--pipeline", help="pipeline name")
    listing.add_argument("--state")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=list_runs)
    for name, help_text in (
        ("show", "a run and its nodes"),
        ("watch", "follow a run live until it ends: its events, node states and log lines"),
        ("pause", "pause a run (running nodes are frozen)"),
        ("resume", "resume a paused run"),
        ("cancel", "cancel a run (running nodes are killed)"),
        ("restart", "start a new run of the same version with the same input"),
    ):
        command = runs.add_parser(name, help=help_text)
        command.add_argument("run_id")
        if name in ("restart",):
            command.add_argument("--watch", "-w", action="store_true")
        if name == "watch":
            command.add_argument("--no-logs", dest="logs", action="store_false", help="hide log lines")
        command.set_defaults(handler=control_run, action=name)
    rerun = runs.add_parser("rerun", help="rerun from a node, reusing the outputs upstream of it")
    rerun.add_argument("run_id")
    rerun.add_argument("node_id")
    rerun.add_argument("--watch", "-w", action="store_true")
    rerun.set_defaults(handler=control_run, action="rerun")


def load_pipeline_file(path: Path, name: str | None, user: Any = None) -> Any:
    """The latest version of the pipeline in ``path``: reused if unchanged, else saved anew."""
    from control_unit.models import Pipeline
    from control_unit.pipeline_actions import EXPORT_FORMAT, do_create_pipeline, do_save_version

    data = json.loads(path.read_text())
    document = (
        data.get("document") if isinstance(data, dict) and data.get("format") == EXPORT_FORMAT else data
    )
    name = name or (data.get("name") if isinstance(data, dict) else None) or path.stem
    pipeline = Pipeline.objects.filter(name=name).order_by("created_at").first()
    if pipeline is None:
        return do_create_pipeline(name, document, user).latest_version()
    latest = pipeline.latest_version()
    if latest is not None and latest.document == document:
        return latest
    return do_save_version(pipeline, document, user)


def run_file(args: argparse.Namespace) -> int:
    from control_unit.graph import InvalidPipeline
    from control_unit.run_actions import do_start_run

    try:
        run_input = json.loads(args.input)
    except ValueError as exc:
        errors.print(f"[red]--input is not JSON:[/red] {exc}")
        return 2
    try:
        version = load_pipeline_file(args.file, args.name)
    except OSError as exc:
        errors.print(f"[red]cannot read {args.file}:[/red] {exc.strerror}")
        return 2
    except ValueError as exc:
        errors.print(f"[red]{args.file} is not JSON:[/red] {exc}")
        return 2
    except InvalidPipeline as exc:
        errors.print(f"[red]{args.file} is not a valid pipeline:[/red]")
        for problem in exc.problems:
            errors.print(f"  - {escape(problem.message)}")
        return 2
    run = do_start_run(version, run_input)
    console.print(f"run {run.id} of {version.pipeline.name} v{version.number} started")
    return watch(run.id) if args.watch else 0


def list_runs(args: argparse.Namespace) -> int:
    from control_unit.models import Run

    runs = Run.objects.select_related("pipeline", "version")
    if args.pipeline:
        runs = runs.filter(pipeline__name=args.pipeline)
    if args.state:
        runs = runs.filter(state=args.state)
    table = Table("pipeline", "state", "created", "duration")
    # Ids are what people copy into the next command: never wrap or cut them.
    table.columns.insert(0, Column("run", no_wrap=True, min_width=36))
    for run in runs[: args.limit]:
        created = f"{run.created_at:%Y-%m-%d %H:%M:%S}"
        duration = _duration(run.started_at, run.finished_at)
        table.add_row(
            str(run.id), f"{run.pipeline.name} v{run.version.number}", _styled(run.state), created, duration
        )
    console.print(table)
    return 0


def control_run(args: argparse.Namespace) -> int:
    from control_unit import run_actions
    from control_unit.fcb import CannotRerun, InvalidTransition
    from control_unit.models import Run

    try:
        run = Run.objects.get(id=args.run_id)
    except (Run.DoesNotExist, ValueError):
        errors.print(f"[red]no run {escape(args.run_id)}[/red]")
        return 2
    if args.action == "show":
        console.print(node_table(run))
        return 0
    if args.action == "watch":
        return watch(run.id, logs=args.logs)
    try:
        if args.action == "rerun":
            run = run_actions.do_rerun_from(run.id, args.node_id)
        else:
            run = getattr(run_actions, f"do_{args.action}_run")(run.id)
    except (InvalidTransition, CannotRerun) as exc:
        errors.print(f"[red]cannot {args.action}:[/red] {escape(str(exc))}")
        return 1
    console.print(f"run {run.id}: {run.state}")
    return watch(run.id) if getattr(args, "watch", False) else 0


def node_table(run: Any) -> Table:
    run.refresh_from_db()
    title = f"run {run.id} — {run.pipeline.name} v{run.version.number} — {run.state}"
    if run.reason:
        title += f" ({run.reason})"
    table = Table("node", "state", "attempt", "time", "status / error", title=escape(title))
    for node in run.node_runs.order_by("id"):
        detail = node.status_message
        if node.error:
            detail = f"{node.error.get('error_type', 'Error')}: {node.error.get('message', '')}"
        elif node.reason and node.state in ("skipped", "cancelled"):
            detail = node.reason
        state = node.state + (" (reused)" if node.reused else "")
        table.add_row(node.node_id, _styled(state), str(node.attempt or ""),
                      _duration(node.started_at, node.finished_at), escape(detail[:120]))  # fmt: skip
    return table


def watch(run_id: Any, *, logs: bool = True) -> int:
    """Follow a run's trace until the run ends: a line per event (log lines too,
    unless ``logs`` is False) and, on a terminal, a live table of its nodes."""
    from control_unit.models import Run
    from control_unit.run_stream import events_after

    run = Run.objects.select_related("pipeline", "version").get(id=run_id)
    terminal = ("succeeded", "failed", "cancelled")
    last_seq = 0
    # On a terminal the node table stays live below the event lines; elsewhere (a
    # pipe, a CI log) there are only the lines, then the final table.
    live = Live(node_table(run), console=console, refresh_per_second=8, transient=True)
    with live if console.is_terminal else contextlib.nullcontext():
        while True:
            run.refresh_from_db(fields=["state", "reason"])
            for event in events_after(run.id, last_seq):
                last_seq = event["seq"]
                line = describe_event(event, logs=logs)
                if line is not None:
                    console.print(line, highlight=False)
            # Events are read after the state, so a finished run's last ones are in.
            if run.state in terminal:
                break
            if console.is_terminal:
                live.update(node_table(run))
            time.sleep(POLL_S)
    console.print(node_table(run))
    console.print(f"run {run.id} {_styled(run.state)}" + (f": {escape(run.reason)}" if run.reason else ""))
    return 0 if run.state == "succeeded" else 1


def describe_event(event: dict[str, Any], *, logs: bool = True) -> str | None:
    """One line for a person following a run, or None for an event not worth one."""
    data = event["data"]
    kind = event["kind"]
    at = event["at"][11:19]
    who = escape(event["node_id"] or "run")
    if kind == "log":
        if not logs:
            return None
        loud = data.get("stream") == "stderr" or data.get("level") in ("error", "critical")
        style = "red" if loud else "dim"
        return f"{at} {who} [{style}]|[/{style}] {escape(str(data.get('message', '')))}"
    if kind == "logs_dropped":
        return f"{at} {who} [yellow]… {data.get('lines', 0):,} more log lines dropped[/yellow]"
    if kind == "started":
        container = data.get("container_id", "")[:12]
        return f"{at} {who} started on {escape(data.get('worker', ''))} in NPU {container}"
    if kind == "error":
        error_type, message = escape(str(data.get("error_type"))), escape(str(data.get("message")))
        text = f"{at} {who} [bold red]{error_type}[/]: {message}"
        if data.get("traceback"):
            text += "\n" + escape(str(data["traceback"]).rstrip())
        return text
    if kind == "finished":
        return f"{at} {who} finished in {data.get('duration_s') or 0:.2f} s"
    if kind in ("inputs", "outputs"):
        return None  # shown by `flowkit runs show`, and whole by the API
    target = data.get("target", kind)
    reason = f" ({escape(data['reason'])})" if data.get("reason") else ""
    return f"{at} {who}: {_styled(kind if kind != 'run' else target)}{reason}"


def _styled(state: str) -> str:
    style = STATE_STYLES.get(state.split(" ")[0], "")
    return f"[{style}]{state}[/{style}]" if style else state


def _duration(started: Any, finished: Any) -> str:
    if started is None:
        return ""
    end = finished or timezone.now()
    return f"{(end - started).total_seconds():.1f} s"
