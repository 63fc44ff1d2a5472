"""The secret vault pages. Values go in and never come out: forms never render a
submitted value back, even after a validation error."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from secret_manager import actions
from secret_manager.errors import SecretError
from web_ui.roles import ADMIN, EDITOR, has_role


class WriteOnlyTextarea(forms.Textarea):
    """Never renders a value into the page, not even the one just submitted when the
    form comes back with an error."""

    def format_value(self, value: Any) -> None:
        return None


class SecretValueField(forms.CharField):
    widget = WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"})

    def __init__(self, **kwargs: Any) -> None:
        # Keep the value byte-exact: no stripping of whitespace or newlines.
        super().__init__(strip=False, **kwargs)


class NewSecretForm(forms.Form):
    name = forms.CharField(max_length=128, help_text="Letters, digits and _, not starting with a digit.")
    description = forms.CharField(max_length=500, required=False)
    value = SecretValueField(help_text="Any text, 4 characters to 64 KiB.")


class ReplaceSecretForm(forms.Form):
    value = SecretValueField(label="New value")


def _require_editor(request: HttpRequest, action: str, names: list[str]) -> None:
    if not has_role(request.user, EDITOR):
        actions.do_record_denied(request.user, action, names, "the editor role is needed")
        raise PermissionDenied(f"{action} needs the editor role")


@login_required
def vault(request: HttpRequest) -> HttpResponse:
    can_edit = has_role(request.user, EDITOR)
    form: forms.Form = NewSecretForm()
    if request.method == "POST":
        _require_editor(request, "create", [request.POST.get("name", "")])
        form = NewSecretForm(request.POST)
        if form.is_valid():
            try:
                actions.do_create_secret(
                    form.cleaned_data["name"], form.cleaned_data["value"],
                    user=request.user, description=form.cleaned_data["description"],
                )  # fmt: skip
            except SecretError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Secret {form.cleaned_data['name']} saved.")
                return redirect("vault")
    context = {"secrets": actions.list_secrets(), "can_edit": can_edit, "form": form}
    return render(request, "vault/list.html", context, status=400 if form.errors else 200)


@login_required
def replace_secret(request: HttpRequest, name: str) -> HttpResponse:
    _require_editor(request, "update", [name])
    form: forms.Form = ReplaceSecretForm()
    if request.method == "POST":
        form = ReplaceSecretForm(request.POST)
        if form.is_valid():
            try:
                actions.do_replace_secret(name, form.cleaned_data["value"], user=request.user)
            except SecretError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"The value of {name} was replaced.")
                return redirect("vault")
    return render(
        request, "vault/replace.html", {"form": form, "name": name}, status=400 if form.errors else 200
    )


@login_required
def delete_secret(request: HttpRequest, name: str) -> HttpResponse:
    _require_editor(request, "delete", [name])
    if request.method == "POST":
        try:
            actions.do_delete_secret(name, user=request.user)
        except SecretError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Secret {name} deleted.")
        return redirect("vault")
    return render(request, "vault/delete.html", {"name": name})


@login_required
def audit(request: HttpRequest) -> HttpResponse:
    if not has_role(request.user, ADMIN):
        raise PermissionDenied("the audit log is for admins")
    return render(request, "vault/audit.html", {"events": actions.audit_log(limit=500)})
