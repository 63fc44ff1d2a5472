"""``flowkit npu build|list|reap``: the NPU image and the NPU containers on this engine."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from web_ui.cli.console import console, errors


def register(commands: Any) -> None:
    npu = commands.add_parser("npu", help="the NPU image and containers").add_subparsers(
        dest="npu_command", required=True, metavar="SUBCOMMAND"
    )
    build = npu.add_parser("build", help="build the NPU image (works without a registry)")
    build.add_argument(
        "--base",
        default="auto",
        help="base image: auto (default: local base, else pull python:3.11-slim, else debootstrap), "
        "debootstrap, or an image name",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the image is up to date")
    build.set_defaults(handler=build_image)
    listing = npu.add_parser(
        "list",
        help="the NPUs on this Docker engine: dedicated (a pipeline node's own), pooled (waiting in a "
        "worker's warm pool), single-use and node-test ones, with the node each serves",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    listing.set_defaults(handler=list_npus)
    reap = npu.add_parser(
        "reap",
        help="remove the NPUs no live worker holds: every NPU of a worker that is gone (stopped, lost, "
        "or silent longer than FLOWKIT_WORKER_LOST_AFTER_S), running or not, dedicated ones with their "
        "rows; and NPUs that exited over 30 s ago. Live workers' NPUs stay",
        description="Without --all, an NPU stays while a live worker holds it: a dedicated NPU serves "
        "its node across runs, a pooled one waits for a node. A worker this installation never heard "
        "of is left alone (another installation may share the engine).",
    )
    reap.add_argument(
        "--all",
        action="store_true",
        help="remove every NPU on this engine, running, dedicated and pooled ones included, and the "
        "dedicated ones' rows (no worker may be alive: a live one's executions would fail)",
    )
    reap.set_defaults(handler=reap_containers)


def build_image(args: argparse.Namespace) -> int:
    from node_runner.npu_image_build import NpuImageError, build_npu_image

    try:
        build_npu_image(
            args.base, force=args.force, say=lambda text: console.print(f"[cyan]npu:[/cyan] {text}")
        )
    except NpuImageError as exc:
        errors.print(f"[red]NPU image build failed:[/red] {exc}", markup=False)
        return 1
    return 0


def list_npus(args: argparse.Namespace) -> int:
    from node_runner.npu_inventory import npus_on_this_engine

    npus = sorted(
        npus_on_this_engine(),
        key=lambda npu: (npu["worker"] or "", npu["kind"], npu["pipeline_name"] or "", npu["node_id"] or ""),
    )
    if args.json:
        print(json.dumps(npus, indent=2))
        return 0
    table = Table("NPU", "kind", "worker", "pipeline", "node", "executions", "idle since", "memory", "state")
    for npu in npus:
        node = npu["node_id"] or "-"
        if npu["run_id"]:
            attempt = f" #{npu['attempt']}" if npu["attempt"] and npu["attempt"] > 1 else ""
            node += f" (run {npu['run_id'][:8]}{attempt})"
        table.add_row(
            npu["container_id"][:12],
            npu["kind"],
            escape(npu["worker"] or "-"),
            escape(npu["pipeline_name"] or "-"),
            escape(node),
            "-" if npu["executions"] is None else str(npu["executions"]),
            _since(npu["idle_since"]),
            _mib(npu["memory_bytes"], npu["memory_limit_bytes"]),
            npu["state"],
        )
    console.print(table)
    return 0


def _since(moment: str | None) -> str:
    if moment is None:
        return "-"
    then = datetime.fromisoformat(moment)
    seconds = max(0, int((datetime.now(then.tzinfo) - then).total_seconds()))
    if seconds < 120:
        ago = f"{seconds} s"
    else:
        ago = f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"
    return f"{then.astimezone():%H:%M:%S} ({ago} ago)"


def _mib(used: int | None, limit: int | None) -> str:
    if used is None:
        return "-"
    return f"{used / 2**20:.1f}" + (f" / {limit // 2**20}" if limit else "") + " MiB"


def reap_containers(args: argparse.Namespace) -> int:
    from node_runner.npu_inventory import reap_unheld_npus

    removed = reap_unheld_npus(everything=args.all)
    console.print(f"removed {len(removed)} NPU container(s){': ' + ', '.join(removed) if removed else ''}")
    return 0
