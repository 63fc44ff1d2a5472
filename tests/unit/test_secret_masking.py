"""Masking: no secret value, nor a common encoding of it, survives in node output."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secret_manager.masking import MASK, MIN_MASKED_LENGTH, Masker

# Written out here rather than taken from masking.py, so a form it forgets fails a test.
ENCODINGS = {
    "raw": lambda s: s,
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64 unpadded": lambda s: base64.b64encode(s.encode()).decode().rstrip("="),
    "urlsafe base64": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    "urlsafe base64 unpadded": lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    "url quote": lambda s: urllib.parse.quote(s, safe=""),
    "url quote_plus": lambda s: urllib.parse.quote_plus(s),
    "hex": lambda s: s.encode().hex(),
    "HEX": lambda s: s.encode().hex().upper(),
    "json": lambda s: json.dumps(s)[1:-1],
    "json unicode": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    # What print(d), f"{key!r}" and raise KeyError(key) write, and the same inside a
    # text holding both quotes (Python then escapes the single ones).
    "repr": lambda s: repr(s)[1:-1],
    "ascii": lambda s: ascii(s)[1:-1],
    "bytes repr": lambda s: repr(s.encode())[2:-1],
    "repr among quotes": lambda s: repr("'\"" + s)[4:-1],
    "ascii among quotes": lambda s: ascii("'\"" + s)[4:-1],
    "bytes repr among quotes": lambda s: repr(b"'\"" + s.encode())[5:-1],
}
HOSTILE = 'p@ss w/ "quotes" & ünïcode+/= \\ \n 🔑'
SECRETS = st.text(min_size=MIN_MASKED_LENGTH, max_size=40)
TEXT = st.text(max_size=40)
# Secrets and text made of the mask's own character, to stress masks that rebuild a value.
STARRY_SECRETS = st.text(alphabet="ab*", min_size=MIN_MASKED_LENGTH, max_size=12)
STARRY_TEXT = st.text(alphabet="ab*", max_size=20)


def forms(secret: str) -> dict[str, str]:
    return {name: encode(secret) for name, encode in ENCODINGS.items()}


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in strings_in(key) + strings_in(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in strings_in(item)]
    return []


def assert_no_form_of(secret: str, text: str) -> None:
    for name, form in forms(secret).items():
        assert form not in text, f"the {name} form survived"


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_each_form_of_a_secret_is_masked(encoding):
    leaked = f"before {ENCODINGS[encoding](HOSTILE)} after"
    assert Masker([HOSTILE]).mask_text(leaked) == f"before {MASK} after"


def test_a_padded_base64_form_is_masked_whole_not_leaving_its_padding():
    assert Masker(["abcd"]).mask_text("[YWJjZA==]") == "[***]"


def test_a_longer_secret_that_contains_a_shorter_one_is_masked_whole():
    assert Masker(["1234", "token-1234"]).mask_text("auth token-1234 pin 1234") == "auth *** pin ***"


def test_every_occurrence_of_several_secrets_is_masked():
    masker = Masker(["alpha-secret", "beta-secret"])
    assert masker.mask_text("alpha-secretbeta-secret, alpha-secret") == "******, ***"


@given(secret=SECRETS, prefix=TEXT, suffix=TEXT)
def test_no_form_of_a_secret_survives_masking_whatever_surrounds_it(secret, prefix, suffix):
    masker = Masker([secret])
    for name, form in forms(secret).items():
        masked = masker.mask_text(prefix + form + suffix)
        assert form not in masked, f"the {name} form survived"


@given(secret=STARRY_SECRETS, prefix=STARRY_TEXT, suffix=STARRY_TEXT)
def test_no_secret_survives_even_when_the_mask_rebuilds_it(secret, prefix, suffix):
    assert secret not in Masker([secret]).mask_text(prefix + secret + suffix)


def test_a_secret_rebuilt_from_the_masks_own_stars_is_masked_again():
    assert Masker(["ab***"]).mask_text("abab***") == MASK


@given(secret=SECRETS, text=st.lists(st.one_of(TEXT, SECRETS), max_size=6).map("".join))
def test_masking_is_idempotent(secret, text):
    masker = Masker([secret])
    leaked = text + forms(secret)["base64"] + secret + text
    once = masker.mask_text(leaked)
    assert masker.mask_text(once) == once


@given(secret=STARRY_SECRETS, text=STARRY_TEXT)
def test_masking_is_idempotent_even_for_secrets_made_of_stars(secret, text):
    masker = Masker([secret])
    once = masker.mask_text(text + secret + text)
    assert masker.mask_text(once) == once


def nested_with(secret: str):
    leaf = st.sampled_from(list(forms(secret).values())).flatmap(
        lambda form: st.tuples(TEXT, TEXT).map(lambda around: around[0] + form + around[1])
    )
    scalars = st.one_of(leaf, TEXT, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(st.one_of(leaf, TEXT), children, max_size=4),
        ),
        max_leaves=12,
    )


@given(data=st.data(), secret=SECRETS)
def test_masking_a_nested_structure_leaves_no_form_in_any_key_or_value(data, secret):
    value = data.draw(nested_with(secret))
    masked = Masker([secret]).mask(value)
    for text in strings_in(masked):
        assert_no_form_of(secret, text)


def test_masking_keeps_the_shape_and_the_other_scalars_of_a_structure():
    value = {"token-value": ["token-value", 1, 2.5, True, None, ("keep", "token-value")], "n": {"k": "v"}}
    assert Masker(["token-value"]).mask(value) == {
        MASK: [MASK, 1, 2.5, True, None, ("keep", MASK)],
        "n": {"k": "v"},
    }


def test_masking_does_not_modify_its_input():
    value = {"a": ["secret-value"], "b": {"secret-value": "secret-value"}}
    snapshot = json.dumps(value)
    Masker(["secret-value"]).mask(value)
    assert json.dumps(value) == snapshot


def test_a_number_that_shows_a_numeric_secret_is_masked():
    masker = Masker(["482913"])
    assert masker.mask({"pin": 482913, "float": 482913.5, "other": 17, "flag": True}) == {
        "pin": MASK,
        "float": MASK,
        "other": 17,
        "flag": True,
    }


def test_numbers_are_left_alone_when_no_secret_could_show_in_one():
    assert Masker(["not-a-number"]).mask([123456, 1.5e300]) == [123456, 1.5e300]


@given(
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=4),
    text=st.text(alphabet=" !#$&'()*,.:;<>?@[]^`{|}~\n\t"),
)
def test_text_that_holds_no_form_of_a_secret_is_unchanged(secret, text):
    # Every form of an alphanumeric secret is made of letters, digits and +/=_-%,
    # none of which the text uses.
    assert Masker([secret]).mask_text(text) == text


def test_an_ordinary_sentence_is_unchanged():
    sentence = "The run finished in 3.2 s with 42 rows; status: ok (see https://example.com/a?b=c)."
    assert Masker(["s3cr3t-token", HOSTILE]).mask_text(sentence) == sentence


def test_a_masker_without_values_returns_its_input_itself():
    value = {"a": ["b", 1]}
    masker = Masker([])
    assert masker.mask(value) is value
    assert masker.mask_text("anything") == "anything"


def test_empty_values_and_values_within_the_mask_are_ignored():
    masker = Masker(["", "*", "**", "***"])
    assert masker.mask_text("a *** b ** c") == "a *** b ** c"
    assert masker.mask(["x"]) == ["x"]


def test_a_value_shorter_than_the_minimum_is_masked_raw_but_not_in_its_encodings():
    masker = Masker(["abc"])
    assert masker.mask_text("abc YWJj 616263") == "*** YWJj 616263"


PEM = (
    "-----BEGIN KEY-----\r\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ\n"
    "-----END KEY-----"
)


def test_each_line_of_a_secret_that_spans_lines_is_masked_where_it_stands_alone():
    masker = Masker([PEM])
    for line in PEM.split("\n"):
        assert masker.mask_text(f"> {line.rstrip()}") == f"> {MASK}"


def test_a_short_line_of_a_secret_that_spans_lines_is_left_alone():
    assert Masker(["long-first-line\nab"]).mask_text("ab cd") == "ab cd"


@given(secret=SECRETS)
def test_what_python_shows_of_a_secret_in_a_dict_a_repr_or_an_exception_holds_no_form(secret):
    masker = Masker([secret])
    for shown in (str({"k": secret}), f"{secret!r}", str(KeyError(secret)), repr([secret.encode()])):
        assert_no_form_of(secret, masker.mask_text(shown))


def test_masking_goes_deeper_than_pythons_recursion_limit():
    value: list = ["the-secret"]
    for _ in range(20_000):
        value = [value]
    masked = Masker(["the-secret"]).mask(value)
    for _ in range(20_000):
        masked = masked[0]
    assert masked == [MASK]


@given(secret=SECRETS, text=TEXT, cut=st.integers(min_value=1))
def test_a_line_cut_inside_a_secret_keeps_no_first_part_of_it(secret, text, cut):
    first_part = secret[: 1 + cut % (len(secret) - 1)]
    masked = Masker([secret]).mask_cut_line(text + first_part)
    assert masked.endswith(MASK)
    assert not masked[: -len(MASK)].endswith(first_part)


def test_a_cut_line_ending_in_no_part_of_a_secret_is_kept():
    assert Masker(["secret-value"]).mask_cut_line("nothing to see here") == "nothing to see here"


def test_a_maskers_repr_shows_no_value():
    assert "secret-value" not in repr(Masker(["secret-value"]))
