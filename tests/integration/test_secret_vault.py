"""The secret vault on the real database: values stored encrypted and bound to their
names, key rotation, resolution for a node, and an append-only audit log."""

from __future__ import annotations

import base64
import json
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import AnonymousUser, User
from django.core.management import call_command
from django.db import IntegrityError, connection

from secret_manager.actions import (
    AUDIT_FIELDS,
    SECRET_FIELDS,
    audit_log,
    do_create_secret,
    do_delete_secret,
    do_record_denied,
    do_replace_secret,
    do_rotate_secret_keys,
    do_set_secret,
    list_secrets,
    resolve_secrets,
)
from secret_manager.errors import (
    AuditLogIsAppendOnly,
    DuplicateSecret,
    InvalidSecretName,
    InvalidSecretValue,
    SecretDecryptionError,
    UnknownSecret,
)
from secret_manager.models import Secret, SecretAuditEvent

pytestmark = pytest.mark.django_db

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
HOSTILE = {
    "QUOTES": "it's \"quoted\" and 'single'",
    "BACKSLASHES": "C:\\path\\to\\n\\x00 not an escape \\",
    "NEWLINES": "line one\nline two\r\nline three\n",
    "TRIPLE": '"""closing triple quotes""" and \'\'\'',
    "ARROWS": ">>> <<<secret::OTHER>>> >>>",
    "UNICODE": "clé secrète ✓ 鍵 🔑",
    "NUL": "nul\x00inside",
    "INJECTION": '"; import os; os.system("touch /tmp/pwned"); "',
    "LARGEST": "é" * 32768,  # 65536 bytes of UTF-8
}


@pytest.fixture(autouse=True)
def keys(settings):
    settings.FLOWKIT_SECRET_KEYS = [NEW]
    return settings


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password="a long enough password 123")


def stored_ciphertext(name: str) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute("SELECT ciphertext FROM secret_manager_secret WHERE name = %s", [name])
        return bytes(cursor.fetchone()[0])


def store_ciphertext(name: str, ciphertext: bytes) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE secret_manager_secret SET ciphertext = %s WHERE name = %s", [ciphertext, name])


def events(action: str) -> list[SecretAuditEvent]:
    return list(SecretAuditEvent.objects.filter(action=action).order_by("id"))


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_value_comes_back_byte_exact_through_the_database(alice, name):
    do_set_secret(name, HOSTILE[name], user=alice)
    assert resolve_secrets([name], run_id="r", node_id="n") == {name: HOSTILE[name]}


def test_the_database_never_holds_a_plaintext_value(alice):
    value = "plaintext-must-not-appear-9f3c"
    do_set_secret("DUMPED", value, user=alice, description="a canary")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM secret_manager_secret")
        rows = repr(cursor.fetchall()).encode()
        cursor.execute("SELECT ciphertext FROM secret_manager_secret WHERE name = 'DUMPED'")
        ciphertext = bytes(cursor.fetchone()[0])
        cursor.execute("SELECT * FROM secret_manager_secretauditevent")
        audit = repr(cursor.fetchall()).encode()
    for haystack in (rows, ciphertext, audit):
        assert value.encode() not in haystack
        assert base64.b64encode(value.encode()) not in haystack
        assert value.encode().hex().encode() not in haystack


def test_flipping_one_byte_of_a_stored_ciphertext_fails_naming_the_secret(alice):
    do_set_secret("API_KEY", "tamper-target-1234", user=alice)
    token = bytearray(base64.urlsafe_b64decode(stored_ciphertext("API_KEY")))
    token[30] ^= 0x80
    store_ciphertext("API_KEY", base64.urlsafe_b64encode(bytes(token)))
    with pytest.raises(SecretDecryptionError) as failed:
        resolve_secrets(["API_KEY"], run_id="r", node_id="n")
    assert str(failed.value) == (
        "secret API_KEY cannot be decrypted: its ciphertext was tampered with or no configured key matches"
    )
    assert events("resolved") == []


def test_a_ciphertext_copied_onto_another_secrets_row_fails_clearly(alice):
    do_set_secret("GITHUB_TOKEN", "github-value-1234", user=alice)
    do_set_secret("OPENAI_KEY", "openai-value-5678", user=alice)
    store_ciphertext("OPENAI_KEY", stored_ciphertext("GITHUB_TOKEN"))
    with pytest.raises(SecretDecryptionError, match="secret OPENAI_KEY cannot be decrypted") as failed:
        resolve_secrets(["OPENAI_KEY"], run_id="r", node_id="n")
    assert "github-value-1234" not in str(failed.value)


def test_rotation_re_encrypts_every_secret_so_only_the_new_key_is_needed(keys, alice):
    keys.FLOWKIT_SECRET_KEYS = [OLD]
    for name, value in HOSTILE.items():
        do_set_secret(name, value, user=alice)
    keys.FLOWKIT_SECRET_KEYS = [NEW, OLD]
    with pytest.raises(SecretDecryptionError):
        decrypt_with_only(keys, NEW, "QUOTES")

    assert do_rotate_secret_keys(user=alice) == len(HOSTILE)

    keys.FLOWKIT_SECRET_KEYS = [NEW]
    assert resolve_secrets(list(HOSTILE), run_id="r", node_id="n") == HOSTILE
    keys.FLOWKIT_SECRET_KEYS = [OLD]
    for name in HOSTILE:
        with pytest.raises(SecretDecryptionError, match=f"secret {name} cannot be decrypted"):
            resolve_secrets([name], run_id="r", node_id="n")


def decrypt_with_only(keys, key: str, name: str) -> str:
    keys.FLOWKIT_SECRET_KEYS = [key]
    try:
        return resolve_secrets([name], run_id="r", node_id="n")[name]
    finally:
        keys.FLOWKIT_SECRET_KEYS = [NEW, OLD]


def test_rotation_is_audited_once_with_every_name_and_keeps_updated_at(alice):
    do_set_secret("B_KEY", "value-b-1234", user=alice)
    do_set_secret("A_KEY", "value-a-1234", user=alice)
    updated = dict(Secret.objects.values_list("name", "updated_at"))
    assert do_rotate_secret_keys(user=alice) == 2
    [rotated] = events("rotated")
    assert rotated.names == ["A_KEY", "B_KEY"]
    assert rotated.actor_name == "alice"
    assert dict(Secret.objects.values_list("name", "updated_at")) == updated


def test_rotation_that_meets_an_unreadable_secret_changes_nothing(alice):
    do_set_secret("GOOD_KEY", "good-value-1234", user=alice)
    do_set_secret("BROKEN_KEY", "broken-value-1234", user=alice)
    store_ciphertext("BROKEN_KEY", Fernet(OLD).encrypt(b"BROKEN_KEY\x00unreadable"))
    before = {name: stored_ciphertext(name) for name in ("GOOD_KEY", "BROKEN_KEY")}
    with pytest.raises(SecretDecryptionError, match="secret BROKEN_KEY cannot be decrypted"):
        do_rotate_secret_keys(user=alice)
    assert {name: stored_ciphertext(name) for name in before} == before
    assert events("rotated") == []


def test_the_rotate_command_re_encrypts_and_says_how_many(alice):
    do_set_secret("CMD_KEY", "command-value-1234", user=alice)
    before = stored_ciphertext("CMD_KEY")
    out = StringIO()
    call_command("rotate_secret_keys", stdout=out)
    assert "re-encrypted 1 secret(s)" in out.getvalue()
    assert stored_ciphertext("CMD_KEY") != before
    assert resolve_secrets(["CMD_KEY"], run_id="r", node_id="n") == {"CMD_KEY": "command-value-1234"}
    [rotated] = events("rotated")
    assert rotated.actor_name == ""
    assert rotated.detail == "manage.py rotate_secret_keys"


def test_resolution_is_audited_with_names_run_and_node_but_never_values(alice):
    do_set_secret("USER_NAME", "alice-user-value", user=alice)
    do_set_secret("PASS_WORD", "s3cr3t-pass-value", user=alice)
    values = resolve_secrets(["PASS_WORD", "USER_NAME", "PASS_WORD"], run_id="run-7", node_id="fetch")
    assert values == {"PASS_WORD": "s3cr3t-pass-value", "USER_NAME": "alice-user-value"}
    [event] = events("resolved")
    assert (event.names, event.run_id, event.node_id) == (["PASS_WORD", "USER_NAME"], "run-7", "fetch")
    recorded = json.dumps(audit_log(limit=100), default=str)
    assert "s3cr3t-pass-value" not in recorded
    assert "alice-user-value" not in recorded


def test_resolution_marks_the_secrets_used_and_leaves_others_and_updated_at_alone(alice):
    do_set_secret("USED_KEY", "used-value-1234", user=alice)
    do_set_secret("IDLE_KEY", "idle-value-1234", user=alice)
    updated_at = Secret.objects.get(name="USED_KEY").updated_at
    resolve_secrets(["USED_KEY"], run_id="r", node_id="n")
    used, idle = Secret.objects.get(name="USED_KEY"), Secret.objects.get(name="IDLE_KEY")
    assert used.last_used_at is not None
    assert used.updated_at == updated_at
    assert idle.last_used_at is None


def test_an_unknown_name_is_refused_with_the_exact_message_and_nothing_is_recorded(alice):
    do_set_secret("KNOWN", "known-value-1234", user=alice)
    with pytest.raises(UnknownSecret) as refused:
        resolve_secrets(["KNOWN", "KEY", "OTHER"], run_id="r", node_id="n")
    assert str(refused.value) == "secret KEY is not defined"
    assert refused.value.names == ["KEY", "OTHER"]
    assert events("resolved") == []
    assert Secret.objects.get(name="KNOWN").last_used_at is None


def test_resolving_no_names_touches_nothing():
    assert resolve_secrets([], run_id="r", node_id="n") == {}
    assert SecretAuditEvent.objects.count() == 0


def test_create_refuses_a_duplicate_name_and_keeps_the_original(alice):
    do_create_secret("TAKEN", "original-value", user=alice, description="first")
    with pytest.raises(DuplicateSecret) as refused:
        do_create_secret("TAKEN", "second-value", user=alice)
    assert str(refused.value) == "a secret named TAKEN already exists"
    assert resolve_secrets(["TAKEN"], run_id="r", node_id="n") == {"TAKEN": "original-value"}
    assert Secret.objects.get(name="TAKEN").description == "first"
    assert len(events("created")) == 1


def test_set_creates_then_replaces_and_audits_each_with_the_actor(alice):
    created = do_set_secret("ROTATING", "first-value", user=alice, description="kept")
    bob = User.objects.create_user("bob", password="a long enough password 123")
    replaced = do_set_secret("ROTATING", "second-value", user=bob)
    assert created.pk == replaced.pk
    assert resolve_secrets(["ROTATING"], run_id="r", node_id="n") == {"ROTATING": "second-value"}
    secret = Secret.objects.get(name="ROTATING")
    assert (secret.description, secret.created_by, secret.updated_by) == ("kept", alice, bob)
    changes = SecretAuditEvent.objects.exclude(action="resolved").order_by("id")
    assert [(e.action, e.names, e.actor_name) for e in changes] == [
        ("created", ["ROTATING"], "alice"),
        ("updated", ["ROTATING"], "bob"),
    ]


def test_replace_changes_the_description_only_when_one_is_given(alice):
    do_create_secret("DESCRIBED", "value-1234", user=alice, description="old words")
    do_replace_secret("DESCRIBED", "value-5678", user=alice)
    assert Secret.objects.get(name="DESCRIBED").description == "old words"
    do_replace_secret("DESCRIBED", "value-9012", user=alice, description="new words")
    assert Secret.objects.get(name="DESCRIBED").description == "new words"


@pytest.mark.parametrize(
    "action", [do_replace_secret, lambda name, _value, user: do_delete_secret(name, user=user)]
)
def test_replacing_or_deleting_an_unknown_secret_is_refused(alice, action):
    with pytest.raises(UnknownSecret, match=r"^secret MISSING is not defined$"):
        action("MISSING", "value-1234", user=alice)
    assert SecretAuditEvent.objects.count() == 0


def test_delete_removes_the_secret_and_audits_it(alice):
    do_set_secret("DOOMED", "doomed-value", user=alice)
    do_delete_secret("DOOMED", user=alice)
    assert not Secret.objects.filter(name="DOOMED").exists()
    assert [(e.names, e.actor_name) for e in events("deleted")] == [(["DOOMED"], "alice")]
    with pytest.raises(UnknownSecret):
        resolve_secrets(["DOOMED"], run_id="r", node_id="n")


@pytest.mark.parametrize(
    ("name", "value", "error", "message"),
    [
        pytest.param(
            "1BAD", "value-1234", InvalidSecretName, "starts with a digit", id="name with leading digit"
        ),
        pytest.param("BAD-NAME", "value-1234", InvalidSecretName, "contains '-'", id="name with hyphen"),
        pytest.param("", "value-1234", InvalidSecretName, "cannot be empty", id="empty name"),
        pytest.param(
            "SHORT", "abc", InvalidSecretValue, "at least 4 characters long; this one has 3", id="short"
        ),
        pytest.param("EMPTY", "", InvalidSecretValue, "at least 4 characters", id="empty value"),
        pytest.param(
            "HUGE", "x" * 65537, InvalidSecretValue, "at most 65536 bytes (64 KiB)", id="65537 bytes"
        ),
        pytest.param(
            "WIDE", "é" * 32769, InvalidSecretValue, "this one has 65538", id="65538 bytes in 32769 chars"
        ),
        pytest.param("NUMBER", 12345678, InvalidSecretValue, "must be text, not int", id="not text"),
        pytest.param(
            "SURROGATE", "ab\ud800cd", InvalidSecretValue, "character 3 is an unpaired", id="surrogate"
        ),
    ],
)
def test_a_bad_name_or_value_is_refused_clearly_and_nothing_is_stored(alice, name, value, error, message):
    for action in (do_set_secret, do_create_secret):
        with pytest.raises(error) as refused:
            action(name, value, user=alice)
        assert message in str(refused.value)
        if isinstance(value, str) and len(value) >= 3:
            assert value not in str(refused.value)
    assert Secret.objects.count() == 0
    assert SecretAuditEvent.objects.count() == 0


def test_a_bad_new_value_leaves_the_stored_one_intact(alice):
    do_set_secret("STABLE", "stable-value", user=alice)
    with pytest.raises(InvalidSecretValue):
        do_replace_secret("STABLE", "abc", user=alice)
    assert resolve_secrets(["STABLE"], run_id="r", node_id="n") == {"STABLE": "stable-value"}


def test_the_database_refuses_a_malformed_name_that_bypasses_the_actions():
    with pytest.raises(IntegrityError):
        Secret.objects.create(name="1-not-valid", ciphertext=b"x")


def test_the_audit_log_refuses_every_kind_of_update_and_delete(alice):
    event = do_record_denied(alice, "update", ["GUARDED"], "the editor role is needed")
    event.detail = "rewritten"
    attempts = [
        event.save,
        event.delete,
        lambda: SecretAuditEvent.objects.filter(pk=event.pk).update(detail="rewritten"),
        lambda: SecretAuditEvent.objects.all().delete(),
        lambda: SecretAuditEvent.objects.bulk_update([event], ["detail"]),
    ]
    for attempt in attempts:
        with pytest.raises(AuditLogIsAppendOnly, match="append-only"):
            attempt()
    stored = SecretAuditEvent.objects.get(pk=event.pk)
    assert stored.detail == "update refused: the editor role is needed"


def test_deleting_a_user_keeps_their_audit_events_and_their_name(alice):
    do_set_secret("KEPT", "kept-value-1234", user=alice)
    alice.delete()
    [event] = events("created")
    assert (event.actor, event.actor_name) == (None, "alice")
    assert Secret.objects.get(name="KEPT").created_by is None


def test_a_denied_attempt_is_audited_with_who_tried_what(alice):
    do_record_denied(alice, "delete", ["GUARDED"], "the editor role is needed")
    do_record_denied(AnonymousUser(), "list", [], "")
    assert [(e["actor_name"], e["names"], e["detail"]) for e in audit_log(limit=10)] == [
        ("anonymous", [], "list refused"),
        ("alice", ["GUARDED"], "delete refused: the editor role is needed"),
    ]


def test_a_denied_attempt_with_unstorable_names_is_still_recorded(alice):
    do_record_denied(alice, "create\x00", ["A\x00B", "X\ud800Y", "K" * 500, ""], "role\x00needed")
    [event] = events("denied")
    assert event.names == ["A\\x00B", "X\\ud800Y", "K" * 200]
    assert event.detail == "create\\x00 refused: role\\x00needed"


@pytest.mark.parametrize("description", ["with\x00nul", "with \udc80 surrogate", 42])
def test_a_description_the_database_cannot_hold_is_refused_clearly(alice, description):
    with pytest.raises(InvalidSecretValue, match="description"):
        do_set_secret("DESCRIBED", "value-1234", user=alice, description=description)
    assert Secret.objects.count() == 0


def test_the_audit_log_is_newest_first_and_limited(alice):
    for number in range(5):
        do_record_denied(alice, "update", [f"KEY_{number}"], "")
    recent = audit_log(limit=3)
    assert [event["names"] for event in recent] == [["KEY_4"], ["KEY_3"], ["KEY_2"]]
    assert set(recent[0]) == set(AUDIT_FIELDS)


def test_listing_secrets_gives_names_descriptions_and_dates_but_never_values(alice):
    do_set_secret("B_SECRET", "listed-value-b", user=alice, description="second")
    do_set_secret("A_SECRET", "listed-value-a", user=alice, description="first")
    listed = list_secrets()
    assert [(item["name"], item["description"]) for item in listed] == [
        ("A_SECRET", "first"),
        ("B_SECRET", "second"),
    ]
    assert all(set(item) == set(SECRET_FIELDS) for item in listed)
    shown = repr(listed)
    assert "listed-value" not in shown
    assert "ciphertext" not in shown


def test_a_secrets_str_and_repr_never_show_its_value(alice):
    secret = do_set_secret("SHOWN", "never-shown-value", user=alice)
    for text in (str(secret), repr(secret), str(Secret.objects.get(name="SHOWN"))):
        assert "SHOWN" in text
        assert "never-shown-value" not in text
