from __future__ import annotations

import pytest

from sfs.code import Code, new_secret, parse_code, wordlist


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
        assert first in wordlist() and second in wordlist()


@pytest.mark.parametrize(
    "text", ["ABC-123-tiger-lamp", " abc-123-TIGER-lamp\n", "ABC-123 tiger lamp"]
)
def test_parse_code_normalises(text: str) -> None:
    assert parse_code(text) == Code("ABC-123", "tiger-lamp")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ABC-123",
        "AB-123-tiger-lamp",
        "ABC-12-tiger-lamp",
        "ABC-123-tiger",
        "ABC-123-tiger-xyzzy",
    ],
)
def test_parse_code_rejects(text: str) -> None:
    with pytest.raises(ValueError):
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
