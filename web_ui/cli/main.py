"""``flowkit``: the command line of a FlowKit installation.

It runs on a host of the installation and talks to the same database, broker and
Docker engine as the server (settings come from the environment or
~/.flowkit/flowkit.env, exactly as for the server).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from web_ui.cli.console import errors


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web_ui.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured

    try:
        django.setup()
    except ImproperlyConfigured as exc:
        errors.print(f"[red]configuration error:[/red] {exc}")
        raise SystemExit(2) from None


def build_parser() -> argparse.ArgumentParser:
    from web_ui.cli import (
        admin_commands,
        node_commands,
        npu_commands,
        run_commands,
        secret_commands,
        trace_commands,
        worker_commands,
    )

    parser = argparse.ArgumentParser(prog="flowkit", description="FlowKit command line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = (
        node_commands,
        run_commands,
        secret_commands,
        trace_commands,
        npu_commands,
        admin_commands,
        worker_commands,
    )
    for module in modules:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_django()
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
