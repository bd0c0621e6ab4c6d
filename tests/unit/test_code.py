from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs.code import (
    Code,
    looks_like_code,
    new_secret,
    parse_code,
    shown_part,
    suggest_code,
    wordlist,
)


def test_wordlist_has_1024_distinct_simple_words() -> None:
    words = wordlist()
    assert len(words) == 1024
    assert len(set(words)) == 1024
    assert all(w.isascii() and w.isalpha() and w.islower() for w in words)


def test_new_secret_is_two_known_words_and_varies() -> None:
    secrets_drawn = {new_secret() for _ in range(50)}
    assert len(secrets_drawn) > 40
    for secret in secrets_drawn:
        first, second = secret.split("-")
        assert first in wordlist()
        assert second in wordlist()


@pytest.mark.parametrize(
    "text", ["ABC-123-tiger-lamp", " abc-123-TIGER-lamp\n", "ABC-123 tiger lamp"]
)
def test_parse_code_normalises(text: str) -> None:
    assert parse_code(text) == Code("ABC-123", "tiger-lamp")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no code given"),
        ("ABC-123", "missing its secret words"),
        ("AB-123-tiger-lamp", "starts with three letters and three digits"),
        ("ABC-12-tiger-lamp", "starts with three letters and three digits"),
        ("ABC-123-tiger", "missing its second secret word"),
        ("ABC-123-tiger-xyzzy", "second secret word .* is not an sfs code word"),
    ],
)
def test_parse_code_rejects(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_code(text)


def test_code_repr_hides_the_secret() -> None:
    code = Code("ABC-123", "tiger-lamp")
    assert "tiger" not in repr(code)
    assert str(code) == "ABC-123-tiger-lamp"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no code given"),
        ("ABC-123", "ABC-123 is missing its secret words"),
        ("ABC-123-", "ABC-123 is missing its secret words"),
        ("abc-123-tiger", "the code ABC-123-… is missing its second secret word"),
        ("ABC-123-tiger-", "missing its second secret word"),
        ("ABC-123-tiger-xyzzy", "the second secret word of ABC-123-… is not an sfs code word"),
        ("ABC-123-xyzzy-lamp", "the first secret word"),
        ("AB-123-tiger-lamp", "three letters and three digits"),
    ],
)
def test_parse_code_says_which_part_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_code(text)
    assert "tiger" not in str(caught.value).replace("ABC-123-tiger-lamp", "")
    assert "lamp" not in str(caught.value).replace("ABC-123-tiger-lamp", "")


# -- mistyped codes (issue 23) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("ALX232-beam-haddock", "ALX-232-beam-haddock"),  # the ID's hyphen missing
        ("0LX-232-beam-haddock", "OLX-232-beam-haddock"),  # a zero for an O
        ("ALX-23I-beam-haddock", "ALX-231-beam-haddock"),  # an I for a one
        ("alx 232 beam haddock", "ALX-232-beam-haddock"),
        ("ALX_232_beam_haddock", "ALX-232-beam-haddock"),
        ("ALX-232-beam-hadock", "ALX-232-beam-haddock"),  # a letter missing
        ("ALX-232-baem-haddock", "ALX-232-beam-haddock"),  # two swapped
        ("ALX-2321-beam-haddock", None),  # which digit is extra?
        ("ALX-232-beam", None),  # a word missing
    ],
)
def test_suggest_code(typed: str, meant: str | None) -> None:
    assert looks_like_code(typed)
    suggestion = suggest_code(typed)
    assert (None if suggestion is None else str(suggestion)) == meant


@pytest.mark.parametrize(
    "name",
    ["report.pdf", "photos", "hello-world", "v2-beam-haddock", "backup-2023-june", "a/ALX232-beam",
     "ALX232", "ALX232-qqqq-zzzz", ""],
)  # fmt: skip
def test_file_names_do_not_look_like_codes(name: str) -> None:
    assert not looks_like_code(name)
    assert suggest_code(name) is None


@pytest.mark.parametrize(
    ("typed", "shown"),
    [("ALX232-beam-haddock", "ALX232-…"), ("0lx-232-beam-haddock", "0LX-232-…"),
     ("ABC-123-tiger-lamp", "ABC-123-…"), ("ALX-2321-beam", "ALX-2321-…")],
)  # fmt: skip
def test_shown_part_never_holds_the_words(typed: str, shown: str) -> None:
    assert shown_part(typed) == shown


codes = st.builds(
    Code,
    st.from_regex(r"[A-Z]{3}-[0-9]{3}", fullmatch=True),
    st.lists(st.sampled_from(wordlist()), min_size=2, max_size=2).map("-".join),
)


@given(codes)
def test_a_right_code_suggests_itself(code: Code) -> None:
    assert suggest_code(str(code)) == code
    assert suggest_code(str(code).replace("-", "", 1)) == code  # ABC123-…
    assert suggest_code(str(code).replace("-", " ")) == code
    assert shown_part(str(code)) == f"{code.peer_id}-…"  # never a secret word


@given(codes, st.data())
def test_a_letter_typed_for_a_digit_in_the_id_is_undone(code: Code, data: st.DataObject) -> None:
    swaps = {"0": "O", "1": "I", "5": "S", "8": "B"}
    digits = [i for i in range(4, 7) if code.peer_id[i] in swaps]
    if digits:
        i = data.draw(st.sampled_from(digits))
        typo = code.peer_id[:i] + swaps[code.peer_id[i]] + code.peer_id[i + 1 :]
        assert suggest_code(f"{typo}-{code.secret}") == code


@given(st.text(max_size=60))
def test_a_suggestion_is_always_a_valid_code(text: str) -> None:
    suggestion = suggest_code(text)
    if suggestion is not None:
        assert parse_code(str(suggestion)) == suggestion
        assert looks_like_code(text)
