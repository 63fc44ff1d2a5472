"""The single-page app's shell: served at /app/ and below to logged-in users only,
naming the built bundle; / leads to it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


def test_anonymous_visitors_are_sent_to_log_in_and_back():
    response = Client().get("/app/pipelines/123")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/app/pipelines/123"


def test_the_root_leads_to_the_app():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/app/"


@pytest.mark.parametrize("path", ["/app/", "/app/pipelines/abc", "/app/runs/xyz"])
def test_a_logged_in_user_gets_the_shell_with_the_built_bundle_and_a_csrf_cookie(path):
    client = Client()
    client.force_login(User.objects.create_user("someone", password="a long enough password 123"))
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<div id="root"></div>' in html
    assert '<script type="module" src="/static/web_ui/app/assets/' in html
    assert "csrftoken" in response.cookies


def test_an_unbuilt_front_end_is_a_clear_503_not_a_crash(monkeypatch):
    from web_ui import app_shell

    monkeypatch.setattr(app_shell.finders, "find", lambda path: None)
    client = Client()
    client.force_login(User.objects.create_user("someone", password="a long enough password 123"))
    response = client.get("/app/")
    assert response.status_code == 503
    assert "the front end is not built" in response.content.decode()
