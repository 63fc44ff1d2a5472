"""Secret references: which names a node's code asks for, and which names are valid."""

from __future__ import annotations

import ast

import pytest
from flowkit import _secrets
from hypothesis import given
from hypothesis import strategies as st

from secret_manager.errors import InvalidSecretName
from secret_manager.references import NAME_PATTERN, REFERENCE, referenced_names, validate_name

NAMES = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


def test_the_reference_pattern_is_identical_to_the_npu_runtimes():
    assert REFERENCE.pattern == _secrets.REFERENCE.pattern
    assert REFERENCE.flags == _secrets.REFERENCE.flags


def test_names_are_found_in_strings_f_strings_bytes_and_comments():
    code = (
        'a = "<<<secret::PLAIN>>>"\n'
        "b = f\"Bearer {'<<<secret::IN_FSTRING>>>'}\"\n"
        "c = b'<<<secret::IN_BYTES>>>'\n"
        "# see <<<secret::IN_COMMENT>>>\n"
    )
    assert referenced_names(code) == ["PLAIN", "IN_FSTRING", "IN_BYTES", "IN_COMMENT"]


def test_several_references_on_one_line_and_adjacent_references_are_all_found():
    code = 'pair = "<<<secret::USER>>><<<secret::PASS>>>"; x = "<<<secret::HOST>>>:<<<secret::PORT>>>"'
    assert referenced_names(code) == ["USER", "PASS", "HOST", "PORT"]


def test_each_name_is_listed_once_in_order_of_first_appearance():
    code = '"<<<secret::B>>>" "<<<secret::A>>>" "<<<secret::B>>>" "<<<secret::C>>>" "<<<secret::A>>>"'
    assert referenced_names(code) == ["B", "A", "C"]


def test_a_reference_wrapped_in_extra_angle_brackets_is_still_found():
    assert referenced_names("<<<<secret::KEY>>>>") == ["KEY"]


def test_code_without_references_asks_for_no_secret():
    assert referenced_names("def main():\n    return [], {'x': '<<<not a secret>>>'}, 'ok'\n") == []


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("<<<secret::>>>", id="empty name"),
        pytest.param("<<<secret::1KEY>>>", id="leading digit"),
        pytest.param("<<<secret::MY-KEY>>>", id="hyphen"),
        pytest.param("<<<secret::MY KEY>>>", id="space"),
        pytest.param("<<<secret::clé>>>", id="non-ascii"),
        pytest.param("<<secret::KEY>>", id="two brackets"),
        pytest.param("<<<SECRET::KEY>>>", id="upper-case prefix"),
        pytest.param("<<<secret:KEY>>>", id="one colon"),
        pytest.param(f"<<<secret::{'K' * 129}>>>", id="129 characters"),
    ],
)
def test_malformed_references_ask_for_no_secret(code):
    assert referenced_names(code) == []


@given(st.lists(NAMES, min_size=1, max_size=6))
def test_every_name_found_is_one_the_runtime_substitutes(names):
    code = "\n".join(f"v{i} = 'x<<<secret::{name}>>>y'" for i, name in enumerate(names))
    found = referenced_names(code)
    assert found == list(dict.fromkeys(names))
    tree = _secrets.substitute_secrets(ast.parse(code), {name: f"value of {name}" for name in found})
    assert "<<<secret::" not in ast.unparse(tree)


@pytest.mark.parametrize("name", ["A", "_", "_9", "OPENAI_API_KEY", "lower_case_1", "K" * 128])
def test_a_valid_name_is_accepted(name):
    validate_name(name)
    assert NAME_PATTERN.match(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("", "cannot be empty", id="empty"),
        pytest.param("1KEY", "'1KEY' starts with a digit", id="leading digit"),
        pytest.param("MY-KEY", "contains '-'", id="hyphen"),
        pytest.param("MY KEY", "contains ' '", id="space"),
        pytest.param("KEY\n", "contains '\\n'", id="trailing newline"),
        pytest.param("KEY\x00", "contains '\\x00'", id="nul"),
        pytest.param("clé", "contains 'é'", id="non-ascii letter"),
        pytest.param("<<<secret::KEY>>>", "contains '<'", id="a whole reference"),
        pytest.param("K" * 129, "is 129 characters long", id="129 characters"),
    ],
)
def test_an_invalid_name_is_refused_saying_why(name, reason):
    with pytest.raises(InvalidSecretName, match="a name is 1 to 128 ASCII letters") as refused:
        validate_name(name)
    assert reason in str(refused.value)
    assert NAME_PATTERN.match(name) is None


@pytest.mark.parametrize("name", [None, 42, b"KEY", ["KEY"]])
def test_a_name_that_is_not_text_is_refused(name):
    with pytest.raises(InvalidSecretName, match="must be text"):
        validate_name(name)


@given(st.one_of(NAMES, st.text(max_size=140)))
def test_a_name_is_valid_exactly_when_a_reference_to_it_is_recognised(name):
    recognised = REFERENCE.fullmatch(f"<<<secret::{name}>>>") is not None
    try:
        validate_name(name)
    except InvalidSecretName:
        assert not recognised
    else:
        assert recognised
