"""manage.py rotate_secret_keys: re-encrypt every secret under the primary key.

Run it after putting a new key first in FLOWKIT_SECRET_KEYS; then the old keys can be
removed. The same action is behind ``flowkit secrets rotate``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from secret_manager.actions import do_rotate_secret_keys


class Command(BaseCommand):
    help = "Re-encrypt every secret under the primary key of FLOWKIT_SECRET_KEYS."

    def handle(self, *args: Any, **options: Any) -> None:
        count = do_rotate_secret_keys(detail="manage.py rotate_secret_keys")
        self.stdout.write(
            f"re-encrypted {count} secret(s) under the primary key; older keys can now be removed"
        )
