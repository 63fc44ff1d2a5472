"""``flowkit node run FILE.py --input a=2``: one node through the real path."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from web_ui.cli.console import console, errors

POLL_S = 0.1
WORKER_WAIT_S = 30.0


def register(commands: Any) -> None:
    node = commands.add_parser("node", help="work with single nodes").add_subparsers(
        dest="node_command", required=True, metavar="SUBCOMMAND"
    )
    run = node.add_parser(
        "run",
        help="run a node file in an NPU through a Celery worker and print its logs and outputs",
        description='Values of --input are JSON where they parse as JSON (2, [1,2], "x"), else text.',
    )
    run.add_argument("file", type=Path, help="a node file written with the FlowKit node SDK")
    run.add_argument(
        "--input", "-i", action="append", default=[], metavar="PORT=VALUE", help="an input value"
    )
    run.add_argument("--timeout", type=float, help="seconds before the node is stopped")
    run.add_argument("--memory", type=int, help="memory limit in MiB")
    run.add_argument("--cpus", type=float, help="CPU quota, in cores")
    run.add_argument("--network", action="store_true", help="give the node network access")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.set_defaults(handler=run_node_file)


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        port, sep, raw = pair.partition("=")
        if not sep or not port:
            raise SystemExit(f"--input takes PORT=VALUE, got {pair!r}")
        try:
            inputs[port] = json.loads(raw)
        except ValueError:
            inputs[port] = raw
    return inputs


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    for name, value in (("timeout_s", args.timeout), ("memory_mb", args.memory), ("cpus", args.cpus)):
        if value is not None:
            limits[name] = value
    if args.network:
        limits["network"] = True
    return limits


def run_node_file(args: argparse.Namespace) -> int:
    from control_unit.actions import do_start_node_test_run
    from control_unit.limits import LimitError, NodeLimits
    from control_unit.models import NodeTestRun

    try:
        code = args.file.read_text()
    except OSError as exc:
        errors.print(f"[red]cannot read {args.file}:[/red] {exc.strerror}")
        return 2
    try:
        limits = _limits(args)
        timeout = NodeLimits.from_overrides(limits).timeout_s
        test_run = do_start_node_test_run(
            code=code, inputs=parse_inputs(args.input), limits=limits, label=args.file.stem
        )
    except LimitError as exc:
        errors.print(f"[red]bad limit:[/red] {exc}")
        return 2
    started = time.monotonic()
    while not test_run.is_finished:
        waited = time.monotonic() - started
        if test_run.state == "queued" and waited > WORKER_WAIT_S:
            errors.print(
                f"[red]no worker took the node within {WORKER_WAIT_S:g} s[/red]; is a Celery worker running "
                "(`make up`)?"
            )
            return 3
        if waited > WORKER_WAIT_S + timeout + 30:
            errors.print(f"[red]the node did not finish in time[/red] (test run {test_run.id})")
            return 3
        time.sleep(POLL_S)
        test_run = NodeTestRun.objects.get(id=test_run.id)
    return print_test_run(test_run, as_json=args.json)


def print_test_run(test_run: Any, as_json: bool) -> int:
    if as_json:
        console.print_json(
            data={
                "id": str(test_run.id),
                "state": test_run.state,
                "next_nodes": test_run.next_nodes,
                "outputs": test_run.outputs,
                "status_message": test_run.status_message,
                "error": test_run.error,
                "logs": test_run.logs,
                "container_id": test_run.container_id,
            }
        )
        return 0 if test_run.state == "succeeded" else 1
    for line in test_run.logs:
        level = str(line.get("level", "info")).upper()
        message = escape(str(line.get("message", "")))
        console.print(f"[dim]{line.get('stream', '')} {level:<7}[/dim] {message}")
    if test_run.dropped_log_lines:
        console.print(f"[yellow]… {test_run.dropped_log_lines} more log lines were dropped[/yellow]")
    if test_run.state != "succeeded":
        error = test_run.error or {}
        if error.get("traceback"):
            errors.print(error["traceback"].rstrip(), markup=False)
        where = f" (output '{error['port']}')" if error.get("port") else ""
        errors.print(f"[red]{error.get('error_type', 'Error')}{where}:[/red] {error.get('message', '')}")
        return 1
    for port, value in test_run.outputs.items():
        console.print(f"{port} = {json.dumps(value, ensure_ascii=False)}", markup=False)
    if test_run.next_nodes:
        console.print(f"next nodes: {', '.join(test_run.next_nodes)}", markup=False)
    if test_run.status_message:
        console.print(f"[green]{test_run.status_message}[/green]")
    return 0
