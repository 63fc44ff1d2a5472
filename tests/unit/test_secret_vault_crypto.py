"""Encryption at rest: exact round trips, tamper detection, name binding and keys."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given
from hypothesis import strategies as st

from secret_manager.errors import SecretDecryptionError
from secret_manager.vault import decrypt, encrypt, generate_key, load_keys, vault

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
HOSTILE_VALUES = [
    pytest.param("plain-token-123", id="plain"),
    pytest.param("it's \"quoted\" 'twice'", id="quotes"),
    pytest.param("back\\slash \\n \\x00 \\\\ \\", id="backslashes"),
    pytest.param("line one\nline two\r\nthree\ttab", id="newlines"),
    pytest.param('a """ triple """ and \'\'\' too', id="triple quotes"),
    pytest.param(">>> <<<secret::OTHER>>> >>>", id="reference-like"),
    pytest.param("ünïcødé ✓ 秘密 🔑", id="non-ascii"),
    pytest.param("nul\x00inside\x00", id="nul"),
    pytest.param("x" * 65536, id="64 KiB"),
]
TAMPERED = "secret API_KEY cannot be decrypted: its ciphertext was tampered with or no configured key matches"


@pytest.fixture
def keys(settings):
    settings.FLOWKIT_SECRET_KEYS = [NEW]
    return settings


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_a_hostile_value_round_trips_exactly(keys, value):
    assert decrypt("API_KEY", encrypt("API_KEY", value)) == value


@given(st.text())
def test_any_text_round_trips_exactly(value):
    from django.test import override_settings

    with override_settings(FLOWKIT_SECRET_KEYS=[NEW]):
        assert decrypt("ANY", encrypt("ANY", value)) == value


def test_a_token_shows_neither_the_value_nor_its_base64(keys):
    value = "plaintext-canary-value"
    token = encrypt("API_KEY", value)
    assert value.encode() not in token
    assert base64.b64encode(value.encode()) not in token
    assert base64.urlsafe_b64encode(value.encode()).rstrip(b"=") not in token


def test_the_same_value_encrypts_differently_each_time(keys):
    assert encrypt("API_KEY", "same-value") != encrypt("API_KEY", "same-value")


@pytest.mark.parametrize("position", [0, 10, 40, 70, -20, -1])
def test_flipping_one_byte_of_a_token_fails_naming_the_secret(keys, position):
    token = bytearray(base64.urlsafe_b64decode(encrypt("API_KEY", "tamper-target")))
    token[position] ^= 0x01
    with pytest.raises(SecretDecryptionError) as failed:
        decrypt("API_KEY", base64.urlsafe_b64encode(bytes(token)))
    assert str(failed.value) == TAMPERED


def test_a_token_made_for_one_secret_cannot_be_read_as_another(keys):
    token = encrypt("GITHUB_TOKEN", "belongs-to-github")
    with pytest.raises(SecretDecryptionError, match="secret OPENAI_KEY cannot be decrypted") as failed:
        decrypt("OPENAI_KEY", token)
    assert "made for another secret" in str(failed.value)
    assert "belongs-to-github" not in str(failed.value)


def test_a_name_that_is_a_prefix_of_the_bound_name_is_refused_too(keys):
    with pytest.raises(SecretDecryptionError):
        decrypt("KEY", encrypt("KEY_LONGER", "value-1234"))


def test_a_token_of_an_unconfigured_key_fails_clearly(keys):
    foreign = Fernet(OLD).encrypt(b"API_KEY\x00value-1234")
    with pytest.raises(SecretDecryptionError) as failed:
        decrypt("API_KEY", foreign)
    assert str(failed.value) == TAMPERED


def test_garbage_instead_of_a_token_fails_clearly(keys):
    with pytest.raises(SecretDecryptionError, match="secret API_KEY cannot be decrypted"):
        decrypt("API_KEY", b"not a token at all")


def test_the_first_key_encrypts_and_every_key_decrypts(settings):
    settings.FLOWKIT_SECRET_KEYS = [OLD]
    old_token = encrypt("API_KEY", "written-under-old")
    settings.FLOWKIT_SECRET_KEYS = [NEW, OLD]
    new_token = encrypt("API_KEY", "written-under-new")
    assert decrypt("API_KEY", old_token) == "written-under-old"
    settings.FLOWKIT_SECRET_KEYS = [NEW]
    assert decrypt("API_KEY", new_token) == "written-under-new"
    with pytest.raises(SecretDecryptionError):
        decrypt("API_KEY", old_token)


def test_a_memoryview_from_the_database_is_accepted(keys):
    assert decrypt("API_KEY", memoryview(encrypt("API_KEY", "from-postgres"))) == "from-postgres"


def test_encrypting_under_an_invalid_name_is_refused(keys):
    from secret_manager.errors import InvalidSecretName

    with pytest.raises(InvalidSecretName):
        encrypt("BAD\x00NAME", "value-1234")


@pytest.mark.parametrize("configured", [None, [], ""])
def test_the_vault_without_keys_is_improperly_configured(settings, configured):
    if configured is None:
        del settings.FLOWKIT_SECRET_KEYS
    else:
        settings.FLOWKIT_SECRET_KEYS = configured
    with pytest.raises(ImproperlyConfigured, match="FLOWKIT_SECRET_KEYS"):
        vault()


def test_the_vault_with_a_bad_key_is_improperly_configured_without_showing_it(settings):
    settings.FLOWKIT_SECRET_KEYS = [NEW, "hunter2-is-not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="key 2 of 2 is not a valid Fernet key") as refused:
        vault()
    assert "hunter2" not in str(refused.value)


def test_the_vault_is_built_once_per_set_of_keys(settings):
    settings.FLOWKIT_SECRET_KEYS = [NEW]
    first = vault()
    assert vault() is first
    settings.FLOWKIT_SECRET_KEYS = [NEW, OLD]
    assert vault() is not first


def test_load_keys_reads_comma_and_whitespace_separated_keys_in_order():
    assert load_keys(f" {NEW} ,{OLD}\n", debug=False) == [NEW, OLD]
    assert load_keys(f"{NEW}\n{OLD}\n", debug=False) == [NEW, OLD]


@pytest.mark.parametrize("raw", [None, "", " , \n"])
def test_load_keys_refuses_to_run_without_keys_outside_debug(raw):
    with pytest.raises(ImproperlyConfigured, match="FLOWKIT_SECRET_KEYS is not set") as refused:
        load_keys(raw, debug=False)
    assert "FLOWKIT_SECRET_KEYS_FILE" in str(refused.value)


def test_load_keys_in_debug_without_keys_gives_a_fixed_working_key():
    keys = load_keys(None, debug=True)
    assert keys == load_keys("", debug=True)
    token = Fernet(keys[0]).encrypt(b"debug")
    assert Fernet(keys[0]).decrypt(token) == b"debug"


def test_load_keys_prefers_given_keys_even_in_debug():
    assert load_keys(NEW, debug=True) == [NEW]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("short-secret-key", id="too short"),
        pytest.param(NEW[:-4] + "!!!=", id="not base64"),
        pytest.param(base64.urlsafe_b64encode(b"k" * 31).decode(), id="31 bytes"),
    ],
)
def test_load_keys_refuses_an_invalid_key_without_showing_it(bad):
    with pytest.raises(ImproperlyConfigured, match="key 2 of 2 is not a valid Fernet key") as refused:
        load_keys(f"{NEW},{bad}", debug=True)
    message = str(refused.value)
    assert bad[:6] not in message
    assert NEW[:6] not in message


def test_generate_key_gives_a_fresh_valid_key_each_time():
    first, second = generate_key(), generate_key()
    assert first != second
    assert load_keys(f"{first},{second}", debug=False) == [first, second]
