"""Reply tokens: round trip, key rotation, tampering, case folding by MTAs, junk, address parsing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.case_ref import ALPHABET, check_char, new_case_id
from parsers.reply_token import MAC_CHARS, SEPARATOR, make_reply_token, token_from_address, verify_reply_token

KEY = b"k" * 32
OLD_KEY = b"o" * 32
OTHER_KEY = b"x" * 32


def make_id(payload: str, prefix: str = "ABU") -> str:
    body = payload + check_char(payload)
    return f"{prefix}-{body[:4]}-{body[4:]}"


CASE = make_id("7K3MQ9D")
OTHER_CASE = make_id("4X8PRT2")


def test_token_is_short_lower_case_and_local_part_safe():
    token = make_reply_token(CASE, KEY)
    assert token == token.lower()
    assert token.startswith(CASE.lower() + SEPARATOR)
    assert len(token.rpartition(SEPARATOR)[2]) == MAC_CHARS
    assert len(token) < 40
    # RFC 5322 §3.4.1 dot-atom text, and no "+" (the sub-address delimiter).
    assert re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", token)
    assert len(f"abuse+{token}") <= 64
    assert len(make_reply_token(make_id("ZZZZZZZ", "ABCDEFGHIJ"), KEY)) < 40


def test_token_is_deterministic_and_spelling_independent():
    assert make_reply_token(CASE, KEY) == make_reply_token(CASE.lower(), KEY)
    assert make_reply_token(CASE, KEY) != make_reply_token(CASE, OTHER_KEY)


def test_round_trip_returns_the_canonical_case_id():
    assert verify_reply_token(make_reply_token(CASE, KEY), [KEY]) == CASE


@pytest.mark.parametrize("transform", [str.upper, str.lower, str.title, str.swapcase, lambda t: f" {t} "])
def test_token_survives_case_folding_by_mtas(transform):
    assert verify_reply_token(transform(make_reply_token(CASE, KEY)), [KEY]) == CASE


def test_key_rotation_accepts_tokens_from_current_and_old_keys():
    keys = [KEY, OLD_KEY]
    assert verify_reply_token(make_reply_token(CASE, KEY), keys) == CASE
    assert verify_reply_token(make_reply_token(CASE, OLD_KEY), keys) == CASE
    assert verify_reply_token(make_reply_token(CASE, OTHER_KEY), keys) is None
    assert verify_reply_token(make_reply_token(CASE, KEY), []) is None


def test_a_token_cannot_be_moved_to_another_case():
    mac = make_reply_token(CASE, KEY).rpartition(SEPARATOR)[2]
    assert verify_reply_token(f"{OTHER_CASE.lower()}{SEPARATOR}{mac}", [KEY]) is None


def test_every_single_character_tamper_is_rejected():
    token = make_reply_token(CASE, KEY)
    for pos, original in enumerate(token):
        for sym in "0123456789abcdefghijklmnopqrstuvwxyz.-+":
            if sym != original:
                tampered = token[:pos] + sym + token[pos + 1 :]
                assert verify_reply_token(tampered, [KEY]) is None, tampered


def test_lenient_spellings_of_the_case_part_are_not_tokens():
    # Only the minted spelling verifies: one token per case.
    case = make_id("10ABCDE")
    token = make_reply_token(case, KEY)
    assert verify_reply_token(token.replace("1", "l", 1), [KEY]) is None


@pytest.mark.parametrize(
    "junk",
    [
        "",
        ".",
        "abu",
        "abu-7k3m-q9dp",
        "abu-7k3m-q9dp.",
        ".aaaaaaaaaaaaaaaa",
        "abu-7k3m-q9dp.aaaaaaaaaaaaaaa",
        "abu-7k3m-q9dp.aaaaaaaaaaaaaaaaa",
        "abu-7k3m-q9dp.aaaaaaaaaaaaaaa!",
        "abu-7k3m-q9dx.aaaaaaaaaaaaaaaa",
        "x" * 10_000,
        "é" * 30,
        "abu-7k3m-q9dp.aaaaaaaaaaaaaaaa\x00",
        None,
        12345,
        b"abu-7k3m-q9dp.aaaaaaaaaaaaaaaa",
    ],
)
def test_junk_never_verifies_and_never_raises(junk):
    assert verify_reply_token(junk, [KEY]) is None  # type: ignore[arg-type]


def test_junk_keys_are_skipped():
    token = make_reply_token(CASE, KEY)
    assert verify_reply_token(token, [b"", "not-bytes", None, KEY]) == CASE  # type: ignore[list-item]


@pytest.mark.parametrize("case_id", ["", "ABU-1234", "ABU-7K3M-Q9DX", "nonsense"])
def test_minting_for_an_invalid_case_is_a_programming_error(case_id: str):
    with pytest.raises(ValueError):
        make_reply_token(case_id, KEY)


def test_minting_with_an_empty_key_is_a_programming_error():
    with pytest.raises(ValueError):
        make_reply_token(CASE, b"")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=2, max_size=10), st.binary(min_size=1, max_size=64))
def test_round_trip_for_any_prefix_and_key(prefix: str, key: bytes):
    case_id = new_case_id(prefix)
    assert verify_reply_token(make_reply_token(case_id, key), [OTHER_KEY, key]) == case_id


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_verify_never_raises_on_arbitrary_text(text: str):
    assert verify_reply_token(text, [KEY]) is None


# --- addresses ----------------------------------------------------------------------------------------------
TOKEN = make_reply_token(CASE, KEY)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (f"abuse+{TOKEN}@example.org", TOKEN),
        (f"ABUSE+{TOKEN.upper()}@EXAMPLE.ORG", TOKEN),
        (f"<abuse+{TOKEN}@example.org>", TOKEN),
        (f'"Abuse Desk" <abuse+{TOKEN}@example.org>', TOKEN),
        (f"Abuse Desk <Abuse+{TOKEN}@example.org>", TOKEN),
        (f"mailto:abuse+{TOKEN}@example.org", TOKEN),
        (f'"abuse+{TOKEN}"@example.org', TOKEN),
        (f"  abuse+{TOKEN}@example.org  ", TOKEN),
        (f"abuse+{TOKEN}", TOKEN),
        ("abuse@example.org", None),
        ("abuse+@example.org", None),
        (f"postmaster+{TOKEN}@example.org", None),
        (f"notabuse+{TOKEN}@example.org", None),
        ("", None),
        ("@", None),
        ("<>", None),
        (None, None),
    ],
)
def test_token_from_address(address: str, expected: str | None):
    assert token_from_address(address) == expected


def test_token_from_address_with_another_base_local_part():
    assert token_from_address(f"Reports+{TOKEN}@example.org", base_local="reports") == TOKEN


def test_address_to_case_end_to_end():
    address = f"Abuse Desk <ABUSE+{make_reply_token(CASE, KEY).upper()}@example.org>"
    assert verify_reply_token(token_from_address(address) or "", [OLD_KEY, KEY]) == CASE
