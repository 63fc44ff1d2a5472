"""Roles: admin, editor, viewer. A role is a Django group of that name; a superuser
is an admin. Each role includes the ones below it."""

from __future__ import annotations

from typing import Any

ADMIN, EDITOR, VIEWER = "admin", "editor", "viewer"
RANK = {VIEWER: 1, EDITOR: 2, ADMIN: 3}


class Forbidden(Exception):
    pass


def role_of(user: Any) -> str | None:
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))
    for role in (ADMIN, EDITOR, VIEWER):
        if role in names:
            return role
    return None


def has_role(user: Any, role: str) -> bool:
    current = role_of(user)
    return current is not None and RANK[current] >= RANK[role]


def require_role(user: Any, role: str) -> None:
    if not has_role(user, role):
        raise Forbidden(f"this needs the {role} role")
