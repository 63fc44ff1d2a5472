"""Secret references in a node's string literals become the secret's value, as data, byte for byte."""

from __future__ import annotations

import ast
import json

import pytest
from flowkit._secrets import SecretNotDefined, substitute_secrets
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.conftest import node_code, returning, run_node

HOSTILE_VALUES = [
    pytest.param("plain-token-123", id="plain"),
    pytest.param("it's \"quoted\" 'twice'", id="quotes"),
    pytest.param("back\\slash \\n \\x00 \\\\ \\", id="backslashes"),
    pytest.param("line one\nline two\r\nthree\ttab", id="newlines"),
    pytest.param('a """ triple """ and \'\'\' too', id="triple-quotes"),
    pytest.param(">>> not a prompt <<<", id="angle-brackets"),
    pytest.param("ünïcødé ✓ 秘密 🔑", id="non-ascii"),
    pytest.param("nul\x00inside", id="nul"),
    pytest.param("{__import__('os').getcwd()} {{braces}}", id="format-braces"),
    pytest.param("", id="empty"),
]


def test_a_reference_in_a_string_literal_becomes_the_value():
    run = run_node(returning("{'token': '<<<secret::API_TOKEN>>>'}"), secrets={"API_TOKEN": "s3cr3t"})

    assert run.result["outputs"] == {"token": "s3cr3t"}


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_hostile_values_arrive_unchanged_in_every_kind_of_literal(value):
    code = returning(
        "{'plain': plain, 'fstring': fstring, 'pair': pair, 'adjacent': adjacent, 'raw': raw.hex()}",
        before="""
        plain = "<<<secret::S>>>"
        fstring = f"Bearer <<<secret::S>>> for {node.id}"
        pair = "<<<secret::S>>>:<<<secret::OTHER>>>|<<<secret::S>>>"
        adjacent = "<<<secret::S>>><<<secret::OTHER>>>"
        raw = b"<<<secret::S>>>"
        """,
    )
    run = run_node(code, secrets={"S": value, "OTHER": "other"})

    assert run.result["outputs"] == {
        "plain": value,
        "fstring": f"Bearer {value} for node-1",
        "pair": f"{value}:other|{value}",
        "adjacent": f"{value}other",
        "raw": value.encode("utf-8").hex(),
    }


def test_a_value_that_looks_like_code_stays_a_string_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    value = f'"; import os; os.system("touch {marker}"); "'
    code = returning(
        "{'single': single, 'double': double, 'triple': triple, 'fstring': fstring}",
        before="""
        single = '<<<secret::EVIL>>>'
        double = "<<<secret::EVIL>>>"
        triple = \"\"\"<<<secret::EVIL>>>\"\"\"
        fstring = f"{'<<<secret::EVIL>>>'}<<<secret::EVIL>>>"
        """,
    )
    run = run_node(code, secrets={"EVIL": value}, cwd=tmp_path)

    assert run.result["outputs"] == {"single": value, "double": value, "triple": value, "fstring": value * 2}
    assert not marker.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_value_that_holds_a_reference_is_not_expanded_again():
    run = run_node(returning("{'a': '<<<secret::A>>>'}"), secrets={"A": "<<<secret::B>>>", "B": "leaked"})

    assert run.result["outputs"] == {"a": "<<<secret::B>>>"}


def test_references_outside_string_literals_are_left_alone():
    code = returning(
        "{'n': 1}",
        before="""
        # <<<secret::NOT_DEFINED>>> in a comment is just a comment
        """,
    )
    run = run_node(code)

    assert run.result["outputs"] == {"n": 1}


@pytest.mark.parametrize("name", ["MISSING", "db_password", "_X9"])
def test_an_unknown_reference_is_an_error_naming_the_secret(name):
    run = run_node(returning(f"{{'x': '<<<secret::{name}>>>'}}"), secrets={"OTHER": "v"})

    assert run.error["message"] == f"secret {name} is not defined"
    assert run.error["error_type"] == "SecretNotDefined"


def test_an_unknown_reference_stops_the_node_before_any_of_its_code_runs():
    code = 'print("ran")\nx = "<<<secret::MISSING>>>"\n' + node_code('return [], {}, "ok"')
    run = run_node(code)

    assert run.error["message"] == "secret MISSING is not defined"
    assert run.logs == []


def test_the_traceback_of_a_failing_node_shows_the_reference_not_the_value():
    value = "hunter2-very-secret"
    code = node_code(
        """
        raise PermissionError("login refused" if "<<<secret::PASSWORD>>>" else "no password")
        """
    )
    run = run_node(code, secrets={"PASSWORD": value})

    assert run.error["error_type"] == "PermissionError"
    assert '"<<<secret::PASSWORD>>>"' in run.error["traceback"]
    assert value not in run.stdout.decode()
    assert value not in run.stderr


def test_a_syntax_error_in_a_node_that_uses_secrets_shows_no_value():
    value = "hunter2-very-secret"
    run = run_node('token = "<<<secret::T>>>"\nif token\n', secrets={"T": value})

    assert run.error["error_type"] == "SyntaxError"
    assert value not in json.dumps(run.events)


# --- substitute_secrets, in process -------------------------------------------------------------


def _substituted_value(source: str, secrets: dict[str, str]):
    tree = substitute_secrets(ast.parse(source), secrets)
    namespace: dict[str, object] = {}
    exec(compile(tree, "<test>", "exec"), namespace)  # noqa: S102 - running the substituted tree is the point
    return namespace["x"]


@given(st.text())
def test_any_text_value_survives_substitution_exactly(value):
    assert _substituted_value('x = "<<<secret::K>>>"', {"K": value}) == value


@given(st.text(), st.text(alphabet=st.characters(exclude_characters="<")))
def test_any_value_survives_substitution_inside_surrounding_text(value, around):
    source = f"x = {around + '<<<secret::K>>>' + around!r}"

    assert _substituted_value(source, {"K": value}) == around + value + around


@given(st.text())
def test_any_text_value_arrives_in_a_bytes_literal_as_its_utf8_encoding(value):
    assert _substituted_value('x = b"<<<secret::K>>>"', {"K": value}) == value.encode("utf-8")


def test_bytes_around_a_reference_that_are_not_utf8_are_kept_byte_for_byte():
    source = 'x = b"\\xff\\x00<<<secret::K>>>\\x80\\xfe"'

    assert _substituted_value(source, {"K": "ü"}) == b"\xff\x00" + "ü".encode() + b"\x80\xfe"


def test_substitute_secrets_raises_secret_not_defined_for_an_unknown_name():
    with pytest.raises(SecretNotDefined, match=r"^secret NOPE is not defined$"):
        substitute_secrets(ast.parse('x = "<<<secret::NOPE>>>"'), {})


def test_a_malformed_reference_is_left_as_written():
    source = 'x = "<<<secret::9starts-with-digit>>> <<<secret::>>> <<secret::K>>"'

    assert _substituted_value(source, {"K": "v"}) == source[5:-1]
