"""``flowkit npu build|reap``: the NPU image and stray NPU containers."""

from __future__ import annotations

import argparse
from typing import Any

from web_ui.cli.main import console, errors


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
    reap = npu.add_parser("reap", help="remove NPU containers left behind by a crash")
    reap.add_argument("--all", action="store_true", help="also remove running NPUs (no worker may be alive)")
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


def reap_containers(args: argparse.Namespace) -> int:
    from node_runner.reaper import reap_npu_containers

    removed = reap_npu_containers(include_running=args.all)
    console.print(f"removed {len(removed)} NPU container(s){': ' + ', '.join(removed) if removed else ''}")
    return 0
