"""``flowkit admin init`` and ``flowkit health``: set-up and status of an installation."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import Any

from rich.table import Table

from web_ui.cli.console import console

ADMIN_USERNAME = "admin"


def register(commands: Any) -> None:
    admin = commands.add_parser("admin", help="the installation's accounts").add_subparsers(
        dest="admin_command", required=True, metavar="SUBCOMMAND"
    )
    init = admin.add_parser("init", help="create the first admin account (once) and print its credentials")
    init.set_defaults(handler=init_admin)
    health = commands.add_parser("health", help="check the database, Redis, Docker, NPU image and workers")
    health.set_defaults(handler=show_health)
    tokens = commands.add_parser("tokens", help="API tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="SUBCOMMAND"
    )
    create = tokens.add_parser("create", help="create an API token for a user (shown once)")
    create.add_argument("username")
    create.add_argument("--name", default="cli")
    create.set_defaults(handler=create_token)


def create_token(args: argparse.Namespace) -> int:
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from control_unit import audit
    from web_ui.models import ApiToken

    user = get_user_model().objects.filter(username=args.username).first()
    if user is None:
        console.print(f"[red]no user {args.username}[/red]")
        return 2
    with transaction.atomic():
        row, token = ApiToken.issue(user, args.name)
        audit.record("token.create", user, row.name, via="cli")
    console.print(token, markup=False)
    return 0


def _password_file() -> Path:
    from django.conf import settings

    return Path(settings.FLOWKIT_HOME) / "initial-admin-password"


def init_admin(args: argparse.Namespace) -> int:
    """Create ``admin`` with a random password kept in a 0600 file, like Jenkins'
    initialAdminPassword, so a second bring-up can print it again until it is changed."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    password_file = _password_file()
    user = user_model.objects.filter(username=ADMIN_USERNAME).first()
    if user is None:
        password = secrets.token_urlsafe(18)
        user_model.objects.create_superuser(ADMIN_USERNAME, email="", password=password)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        console.print(
            f"admin account created: user [bold]{ADMIN_USERNAME}[/bold] password [bold]{password}[/bold]"
        )
        return 0
    stored = password_file.read_text().strip() if password_file.is_file() else None
    if stored and user.check_password(stored):
        console.print(f"admin account: user [bold]{ADMIN_USERNAME}[/bold] password [bold]{stored}[/bold]")
    else:
        console.print(
            f"admin account: user [bold]{ADMIN_USERNAME}[/bold] (its password was changed since set-up; "
            "`python manage.py changepassword admin` sets a new one)"
        )
    return 0


def show_health(args: argparse.Namespace) -> int:
    from web_ui.health import run_checks

    checks = run_checks()
    table = Table("dependency", "status", "detail")
    for name, check in checks.items():
        table.add_row(name, "[green]up[/green]" if check["ok"] else "[red]down[/red]", check["detail"])
    console.print(table)
    return 0 if all(check["ok"] for check in checks.values()) else 1
