"""``flowkit secrets list|set|rm|rotate``. The CLI acts as a FlowKit user (``--user``
or FLOWKIT_USER) and that user's role applies, as in the UI and the API. A value is
read from a prompt or from stdin, never from the command line, where it would land in
the shell history and in every process listing."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from rich.markup import escape
from rich.table import Table

from web_ui.cli.console import console, errors


def register(commands: Any) -> None:
    secrets = commands.add_parser("secrets", help="the secret vault (values are write-only)")
    secrets.add_argument("--user", default=os.environ.get("FLOWKIT_USER"), help="act as this FlowKit user")
    sub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="SUBCOMMAND")
    sub.add_parser("list", help="secret names and dates").set_defaults(handler=list_secrets)
    put = sub.add_parser("set", help="create or replace a secret; the value is read from a prompt or stdin")
    put.add_argument("name")
    put.add_argument("--description")
    put.set_defaults(handler=set_secret)
    remove = sub.add_parser("rm", help="delete a secret")
    remove.add_argument("name")
    remove.set_defaults(handler=remove_secret)
    sub.add_parser("rotate", help="re-encrypt every secret under the primary key").set_defaults(
        handler=rotate
    )


def _acting_user(args: argparse.Namespace, role: str, action: str, names: list[str]) -> Any:
    from django.contrib.auth import get_user_model

    from secret_manager import actions
    from web_ui.roles import has_role

    if not args.user:
        errors.print("[red]say who you are:[/red] --user NAME or FLOWKIT_USER")
        raise SystemExit(2)
    user = get_user_model().objects.filter(username=args.user).first()
    if user is None:
        errors.print(f"[red]no user {escape(args.user)}[/red]")
        raise SystemExit(2)
    if not has_role(user, role):
        actions.do_record_denied(user, action, names, f"the {role} role is needed (command line)")
        errors.print(f"[red]refused:[/red] {action} needs the {role} role")
        raise SystemExit(3)
    return user


def list_secrets(args: argparse.Namespace) -> int:
    from secret_manager import actions

    _acting_user(args, "viewer", "list", [])
    table = Table("name", "description", "updated", "last used")
    for secret in actions.list_secrets():
        used = secret["last_used_at"]
        table.add_row(secret["name"], escape(secret["description"]), f"{secret['updated_at']:%Y-%m-%d %H:%M}",
                      f"{used:%Y-%m-%d %H:%M}" if used else "never")  # fmt: skip
    console.print(table)
    return 0


def set_secret(args: argparse.Namespace) -> int:
    from secret_manager import actions
    from secret_manager.errors import SecretError

    user = _acting_user(args, "editor", "update", [args.name])
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {args.name}: ")
        if getpass.getpass("again: ") != value:
            errors.print("[red]the two values differ; nothing was stored[/red]")
            return 2
    else:
        value = sys.stdin.read()
        # One trailing newline is what `echo` and here-strings add; anything else is kept.
        value = value[:-1] if value.endswith("\n") else value
    try:
        actions.do_set_secret(args.name, value, user=user, description=args.description)
    except SecretError as exc:
        errors.print(f"[red]{escape(str(exc))}[/red]")
        return 2
    console.print(f"secret {args.name} stored")
    return 0


def remove_secret(args: argparse.Namespace) -> int:
    from secret_manager import actions
    from secret_manager.errors import SecretError

    user = _acting_user(args, "editor", "delete", [args.name])
    try:
        actions.do_delete_secret(args.name, user=user)
    except SecretError as exc:
        errors.print(f"[red]{escape(str(exc))}[/red]")
        return 2
    console.print(f"secret {args.name} deleted")
    return 0


def rotate(args: argparse.Namespace) -> int:
    from secret_manager import actions

    user = _acting_user(args, "admin", "rotate", [])
    count = actions.do_rotate_secret_keys(user=user)
    console.print(f"re-encrypted {count} secret(s) under the primary key; older keys can now be removed")
    return 0
