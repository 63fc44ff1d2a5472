"""The vault pages: list, create, replace, delete with confirmation; a value never
comes back into a page, not even after a validation error."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from secret_manager.actions import do_set_secret, list_secrets, resolve_secrets

pytestmark = pytest.mark.django_db
VALUE = "page-value-never-shown-7c1e"


@pytest.fixture
def editor() -> Client:
    user = User.objects.create_user("page-editor", password="a long enough password 123")
    user.groups.add(Group.objects.get_or_create(name="editor")[0])
    client = Client()
    client.force_login(user)
    return client


def test_the_vault_needs_a_login():
    response = Client().get("/vault/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_login_page_logs_a_user_in():
    User.objects.create_user("someone", password="a long enough password 123")
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "someone", "password": "a long enough password 123"}
    )
    assert response.status_code == 302
    assert client.get("/vault/").status_code == 200


def test_an_editor_creates_a_secret_and_sees_its_name_but_never_its_value(editor):
    response = editor.post("/vault/", {"name": "PAGE_SECRET", "description": "for tests", "value": VALUE})
    assert response.status_code == 302
    page = editor.get("/vault/").content.decode()
    assert "PAGE_SECRET" in page
    assert "for tests" in page
    assert VALUE not in page
    assert resolve_secrets(["PAGE_SECRET"], run_id="t", node_id="t") == {"PAGE_SECRET": VALUE}


def test_a_refused_form_does_not_render_the_submitted_value_back(editor):
    response = editor.post("/vault/", {"name": "9starts_with_a_digit", "value": VALUE})
    assert response.status_code == 400
    page = response.content.decode()
    assert VALUE not in page
    assert "9starts_with_a_digit" in page  # the name is kept for correction


def test_replacing_a_value_keeps_it_write_only(editor):
    do_set_secret("ROTATED", "old-value-1234", user=None)
    assert "old-value-1234" not in editor.get("/vault/ROTATED/replace/").content.decode()
    assert editor.post("/vault/ROTATED/replace/", {"value": "new-value-5678"}).status_code == 302
    assert resolve_secrets(["ROTATED"], run_id="t", node_id="t") == {"ROTATED": "new-value-5678"}


def test_delete_asks_for_confirmation_first(editor):
    do_set_secret("DOOMED", "doomed-value", user=None)
    confirmation = editor.get("/vault/DOOMED/delete/")
    assert "Delete secret" in confirmation.content.decode()
    assert [s["name"] for s in list_secrets()] == ["DOOMED"]
    assert editor.post("/vault/DOOMED/delete/").status_code == 302
    assert list_secrets() == []


def test_the_audit_log_page_is_for_admins_only(editor):
    assert editor.get("/vault/audit/").status_code == 403
    admin = Client()
    admin.force_login(User.objects.create_superuser("page-admin", password="a long enough password 123"))
    do_set_secret("LOGGED", "logged-value", user=None)
    page = admin.get("/vault/audit/").content.decode()
    assert "LOGGED" in page
    assert "logged-value" not in page
