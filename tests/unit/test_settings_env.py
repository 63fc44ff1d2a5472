"""Settings come from typed environment variables; a bad value stops start-up with its name."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from tests.unit.conftest import REPO
from web_ui.env import env_bool, env_choice, env_float, env_int, env_list, env_secret

VAR = "FLOWKIT_UNIT_TEST_VALUE"


# --- env_int ------------------------------------------------------------------------------------


def test_env_int_reads_an_integer_with_underscores_and_spaces(monkeypatch):
    monkeypatch.setenv(VAR, " 1_000 ")

    assert env_int(VAR, 5) == 1000


def test_env_int_gives_the_default_when_unset(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)

    assert env_int(VAR, 5) == 5


@pytest.mark.parametrize("raw", ["abc", "1.5", "", "0x10", "1e3"])
def test_env_int_refuses_a_non_integer_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)

    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be an integer, got {raw!r}$"):
        env_int(VAR, 5)


def test_env_int_refuses_a_value_below_its_minimum(monkeypatch):
    monkeypatch.setenv(VAR, "3")

    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be at least 16, got 3$"):
        env_int(VAR, 256, minimum=16)


def test_env_int_refuses_a_value_above_its_maximum(monkeypatch):
    monkeypatch.setenv(VAR, "5000")

    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be at most 4096, got 5000$"):
        env_int(VAR, 64, maximum=4096)


# --- env_bool -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("off", False),
    ],
)
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv(VAR, raw)

    assert env_bool(VAR, not expected) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "enabled"])
def test_env_bool_refuses_anything_else_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)

    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be true or false .*got {raw!r}$"):
        env_bool(VAR, False)


# --- env_float ----------------------------------------------------------------------------------


def test_env_float_reads_a_number(monkeypatch):
    monkeypatch.setenv(VAR, " 0.25 ")

    assert env_float(VAR, 1.0) == 0.25


@pytest.mark.parametrize("raw", ["fast", "", "1,5"])
def test_env_float_refuses_a_non_number_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)

    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be a number, got {raw!r}$"):
        env_float(VAR, 1.0)


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_env_float_refuses_nan_and_infinity_even_without_a_range(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)

    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be a finite number"):
        env_float(VAR, 1.0, minimum=0.01, maximum=64)
    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be a finite number"):
        env_float(VAR, 1.0)


def test_env_float_refuses_a_value_out_of_range(monkeypatch):
    monkeypatch.setenv(VAR, "0.001")

    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be at least 0.01"):
        env_float(VAR, 1.0, minimum=0.01)


# --- env_choice and env_list --------------------------------------------------------------------


def test_env_choice_accepts_one_of_the_choices(monkeypatch):
    monkeypatch.setenv(VAR, "runsc")

    assert env_choice(VAR, "runc", ("runc", "runsc")) == "runsc"


@pytest.mark.parametrize("raw", ["docker", "RUNC", " runc", ""])
def test_env_choice_refuses_anything_else_naming_the_variable_and_the_choices(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)

    with pytest.raises(ImproperlyConfigured, match=rf"^{VAR} must be one of runc, runsc, got {raw!r}$"):
        env_choice(VAR, "runc", ("runc", "runsc"))


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv(VAR, " a.example , ,b.example,")

    assert env_list(VAR, ["default"]) == ["a.example", "b.example"]


# --- env_secret ---------------------------------------------------------------------------------


def test_env_secret_reads_the_file_named_by_name_file(monkeypatch, tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text("from-the-file-ü\n")
    monkeypatch.setenv(f"{VAR}_FILE", str(secret_file))
    monkeypatch.setenv(VAR, "from-the-environment")

    assert env_secret(VAR) == "from-the-file-ü"


def test_env_secret_falls_back_to_the_variable_itself(monkeypatch):
    monkeypatch.delenv(f"{VAR}_FILE", raising=False)
    monkeypatch.setenv(VAR, "from-the-environment")

    assert env_secret(VAR) == "from-the-environment"


def test_env_secret_treats_an_empty_variable_as_unset(monkeypatch):
    monkeypatch.delenv(f"{VAR}_FILE", raising=False)
    monkeypatch.setenv(VAR, "")

    assert env_secret(VAR) is None


def test_env_secret_errors_clearly_on_a_missing_file(monkeypatch, tmp_path):
    missing = tmp_path / "nope"
    monkeypatch.setenv(f"{VAR}_FILE", str(missing))

    with pytest.raises(
        ImproperlyConfigured, match=rf"^Error reading {VAR}_FILE \({re.escape(str(missing))}\): not a file$"
    ):
        env_secret(VAR)


def test_env_secret_errors_clearly_on_a_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(f"{VAR}_FILE", str(tmp_path))

    with pytest.raises(ImproperlyConfigured, match=rf"^Error reading {VAR}_FILE .*not a file$"):
        env_secret(VAR)


def test_env_secret_errors_clearly_on_a_file_that_is_not_text_without_showing_it(monkeypatch, tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_bytes(b"\xffsecret-bytes\xfe")
    monkeypatch.setenv(f"{VAR}_FILE", str(secret_file))

    with pytest.raises(ImproperlyConfigured, match=rf"^Error reading {VAR}_FILE .*not UTF-8 text$") as caught:
        env_secret(VAR)
    assert "secret-bytes" not in str(caught.value)


# --- web_ui.settings at start-up, in a fresh process --------------------------------------------


def start_django(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run django.setup() on the production settings with only the given environment."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "web_ui.settings",
        "FLOWKIT_ENV_FILE": "",
        "DEBUG": "false",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def test_start_up_without_secret_key_fails_when_debug_is_off(tmp_path):
    started = start_django(tmp_path)

    assert started.returncode != 0
    assert "started" not in started.stdout
    assert last_line(started.stderr).startswith(
        "django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not set"
    )


def test_start_up_without_secret_key_works_with_debug_on(tmp_path):
    started = start_django(tmp_path, DEBUG="true")

    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "started"


def test_start_up_with_a_secret_key_and_vault_keys_works_with_debug_off(tmp_path):
    started = start_django(tmp_path, SECRET_KEY="k" * 50, FLOWKIT_SECRET_KEYS=Fernet.generate_key().decode())

    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "started"


def test_start_up_without_vault_keys_fails_when_debug_is_off(tmp_path):
    started = start_django(tmp_path, SECRET_KEY="k" * 50)

    assert started.returncode != 0
    assert last_line(started.stderr).startswith(
        "django.core.exceptions.ImproperlyConfigured: FLOWKIT_SECRET_KEYS is not set"
    )


def test_start_up_reads_vault_keys_from_a_file_and_never_echoes_a_bad_key(tmp_path):
    key_file = tmp_path / "vault-keys"
    key_file.write_text("not-a-fernet-key-but-still-secret\n")
    started = start_django(tmp_path, SECRET_KEY="k" * 50, FLOWKIT_SECRET_KEYS_FILE=str(key_file))

    assert started.returncode != 0
    assert "key 1 of 1 is not a valid Fernet key" in started.stderr
    assert "not-a-fernet-key" not in started.stderr


def test_start_up_fails_when_secret_key_file_is_missing(tmp_path):
    started = start_django(tmp_path, SECRET_KEY_FILE=str(tmp_path / "missing"))

    assert started.returncode != 0
    assert "SECRET_KEY_FILE" in last_line(started.stderr)


def test_start_up_fails_naming_database_url_when_it_is_not_postgres(tmp_path):
    started = start_django(tmp_path, SECRET_KEY="k" * 50, DATABASE_URL="mysql://x")

    assert started.returncode != 0
    assert "ImproperlyConfigured: DATABASE_URL must be a postgres:// URL" in last_line(started.stderr)


def test_a_bad_database_url_error_does_not_show_its_password(tmp_path):
    started = start_django(tmp_path, SECRET_KEY="k" * 50, DATABASE_URL="mysql://admin:hunter2@db.example/app")

    assert "DATABASE_URL" in last_line(started.stderr)
    assert "hunter2" not in started.stderr


def test_start_up_fails_naming_a_memory_limit_that_is_not_a_number(tmp_path):
    started = start_django(tmp_path, SECRET_KEY="k" * 50, FLOWKIT_NPU_MEMORY_MB="abc")

    assert started.returncode != 0
    assert last_line(started.stderr) == (
        "django.core.exceptions.ImproperlyConfigured: FLOWKIT_NPU_MEMORY_MB must be an integer, got 'abc'"
    )


def test_start_up_fails_naming_debug_when_it_is_not_a_boolean(tmp_path):
    started = start_django(tmp_path, DEBUG="maybe")

    assert started.returncode != 0
    assert "ImproperlyConfigured: DEBUG must be true or false" in last_line(started.stderr)


def test_a_bad_redis_url_error_does_not_show_its_password(tmp_path):
    started = start_django(tmp_path, SECRET_KEY="k" * 50, REDIS_URL="http://:hunter2@redis.example:6379/0")

    assert "REDIS_URL" in last_line(started.stderr)
    assert "hunter2" not in started.stderr
