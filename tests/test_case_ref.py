"""Case IDs: check-character guarantees, finding IDs in hostile subjects and bodies, RFC 2047 decoding."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.case_ref import (
    ALPHABET,
    WEIGHTS,
    check_char,
    decode_header_text,
    find_case_ids,
    find_case_ids_in_body,
    is_valid_case_id,
    new_case_id,
    parse_case_id,
)


def make_id(payload: str, prefix: str = "ABU") -> str:
    """A deterministic valid ID: fixed payload plus its check character."""
    body = payload + check_char(payload)
    return f"{prefix}-{body[:4]}-{body[4:]}"


def broken(case_id: str) -> str:
    """The same ID with a wrong check character."""
    last = case_id[-1]
    return case_id[:-1] + ALPHABET[(ALPHABET.index(last) + 1) % 32]


A = make_id("7K3MQ9D")
B = make_id("0000001")
C = make_id("ZZZZZZZ")
D = make_id("4X8PRT2")
FULLWIDTH = str.maketrans({ch: chr(ord(ch) + 0xFEE0) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"})


def dashed(case_id: str, dash: str) -> str:
    return case_id.replace("-", dash)


# --- check character ----------------------------------------------------------------------------------------


def test_check_characters_are_pinned_because_ids_are_persisted():
    # Changing the algorithm would orphan every stored case; these are hand-checkable (weight of the last
    # payload position is x = 2, so payload ...1 has check 2).
    assert [check_char(p) for p in ("0000000", "0000001", "7K3MQ9D", "ZZZZZZZ", "4X8PRT2")] == list("02PC4")
    assert A == "ABU-7K3M-Q9DP"


def _gf32_mul(a: int, b: int) -> int:
    """Independent GF(32) multiply (x^5 + x^2 + 1) so the proof does not reuse the module's tables."""
    product = 0
    for bit in range(5):
        if b >> bit & 1:
            product ^= a << bit
    for bit in range(9, 4, -1):
        if product >> bit & 1:
            product ^= 0b100101 << (bit - 5)
    return product


def test_weights_prove_every_substitution_and_transposition_is_caught_for_all_ids():
    # The code is linear: an error changes the syndrome by w_i*d (substitution) or (w_i+w_j)*d (swap),
    # with d = a XOR b != 0, independently of the rest of the ID. Enumerating every position and every
    # d therefore covers all 32^7 IDs at once.
    assert len(WEIGHTS) == 8 and WEIGHTS[-1] == 1
    for d in range(1, 32):
        for i, wi in enumerate(WEIGHTS):
            assert _gf32_mul(wi, d) != 0
            for wj in WEIGHTS[i + 1 :]:
                assert _gf32_mul(wi ^ wj, d) != 0


def test_random_ids_reject_every_single_substitution_and_adjacent_swap_exhaustively():
    rng = random.Random(20240601)
    checked = 0
    for _ in range(2000):
        case_id = make_id("".join(rng.choice(ALPHABET) for _ in range(7)))
        body = case_id[4:8] + case_id[9:]
        assert is_valid_case_id(case_id)
        for pos in range(8):
            for sym in ALPHABET:
                if sym == body[pos]:
                    continue
                typo = body[:pos] + sym + body[pos + 1 :]
                assert not is_valid_case_id(f"ABU-{typo[:4]}-{typo[4:]}"), (case_id, pos, sym)
                checked += 1
        for pos in range(7):
            if body[pos] == body[pos + 1]:
                continue
            swap = body[:pos] + body[pos + 1] + body[pos] + body[pos + 2 :]
            assert not is_valid_case_id(f"ABU-{swap[:4]}-{swap[4:]}"), (case_id, pos)
    assert checked == 2000 * 8 * 31


def test_check_char_rejects_wrong_length_and_foreign_symbols():
    with pytest.raises(ValueError):
        check_char("123456")
    with pytest.raises(ValueError):
        check_char("12345U7")


# --- minting and validating ---------------------------------------------------------------------------------


def test_new_case_id_has_the_canonical_shape_and_is_random():
    ids = {new_case_id() for _ in range(200)}
    assert len(ids) == 200
    for case_id in ids:
        assert len(case_id) == 13 and case_id.startswith("ABU-") and case_id[8] == "-"
        assert set(case_id[4:8] + case_id[9:]) <= set(ALPHABET)


@pytest.mark.parametrize("prefix", ["AB", "CERT", "csirt1", "ABCDEFGHIJ"])
def test_configurable_prefixes_are_upper_cased_and_validated(prefix: str):
    case_id = new_case_id(prefix)
    assert case_id.startswith(prefix.upper() + "-")
    assert is_valid_case_id(case_id, prefix) and find_case_ids(f"Re: {case_id}", prefix) == [case_id]


@pytest.mark.parametrize("prefix", ["A", "ABCDEFGHIJK", "AB-C", "ÄBU", "", "AB C"])
def test_bad_prefix_is_a_configuration_error(prefix: str):
    with pytest.raises(ValueError):
        new_case_id(prefix)
    with pytest.raises(ValueError):
        find_case_ids("x", prefix)


def test_prefix_does_not_take_part_in_the_check_so_renaming_keeps_ids_valid():
    assert is_valid_case_id("CERT" + A[3:], "CERT")
    assert not is_valid_case_id(A, "CERT")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (A, A),
        (A.lower(), A),
        (f"  {A}\n", A),
        (dashed(A, " "), A),
        (dashed(A, "–"), A),
        (A.translate(FULLWIDTH), A),
        ("abu-" + make_id("10ABCDE")[4:].lower().replace("1", "l").replace("0", "o"), make_id("10ABCDE")),
        (make_id("10ABCDE").replace("1", "I", 1), make_id("10ABCDE")),
        (broken(A), None),
        (A[:-1], None),
        (f"[{A}]", None),
        (f"Re: {A}", None),
        (A.replace("ABU", "XYZ"), None),
        ("", None),
        ("ABU-UUUU-UUUU", None),
    ],
)
def test_parse_and_is_valid_accept_lenient_spellings_of_exactly_one_id(value: str, expected: str | None):
    assert parse_case_id(value) == expected
    assert is_valid_case_id(value) is (expected is not None)


def test_is_valid_never_raises_on_non_strings():
    assert is_valid_case_id(None) is False  # type: ignore[arg-type]
    assert find_case_ids(None) == []  # type: ignore[arg-type]


# --- the subject-line table ---------------------------------------------------------------------------------
# Real-world shapes: localized reply/forward prefixes, gateway tags, client mangling, foreign ticket numbers.
SUBJECTS: list[tuple[str, list[str]]] = [
    (f"Re: {A}", [A]),
    (f"AW: {A} Phishing-Seite", [A]),
    (f"SV: VS: {A}", [A]),
    (f"回复：{A} 钓鱼网站", [A]),
    (f"答复: 转发: [{A}] phishing", [A]),
    (f"RE: [EXTERNAL] {A}", [A]),
    (f"Antw: {A}", [A]),
    (f"RES: ENC: {A}", [A]),
    (f"R: I: {A}", [A]),
    (f"Odp: PD: {A}", [A]),
    (f"YNT: {A}", [A]),
    (f"Ответ: {A}", [A]),
    (f"ΑΠ: {A}", [A]),
    (f"RE[3]: {A}", [A]),
    (f"Re^2: {A}", [A]),
    (f"Automatic reply: {A}", [A]),
    (f"Automatische Antwort: {A}", [A]),
    (f"Undeliverable: {A}", [A]),
    (f"*EXTERNAL* Re: {A}", [A]),
    (f"[SPAM] Re: {A}", [A]),
    (f"[abuse-reports] Re: {A}", [A]),
    (f"TR: Fwd: {A}", [A]),
    (f"Re: FW: Your report {A} has been received", [A]),
    (f"re: {A.lower()}", [A]),
    (f"Re: aBu-{A[4:].lower()}", [A]),
    (f"Re: {dashed(A, ' ')}", [A]),
    (f"Re: {A[:3]} - {A[4:8]} - {A[9:]}", [A]),
    (f"Re: {dashed(A, '–')}", [A]),  # en dash
    (f"Re: {dashed(A, '—')}", [A]),  # em dash
    (f"Re: {dashed(A, '‐')}", [A]),  # U+2010
    (f"Re: {dashed(A, '‑')}", [A]),  # U+2011 non-breaking hyphen
    (f"Re: {dashed(A, '−')}", [A]),  # U+2212 minus
    (f"Re: {dashed(A, '﹘')}", [A]),  # U+FE58
    (f"Re: {dashed(A, '﹣')}", [A]),  # U+FE63
    (f"Re: {dashed(A, '－')}", [A]),  # U+FF0D
    (f"Re: {A.translate(FULLWIDTH)}", [A]),  # full-width, NFKC
    (f"回复：［{A.translate(FULLWIDTH)}］", [A]),
    (f"Re: {A[:3]}\u200b-{A[4:8]}\u200d-{A[9:]}", [A]),  # zero-width
    (f"Re: \u2066{A}\u2069", [A]),  # bidi isolates
    (f"Re: \u202e{A[:6]}\u202c{A[6:]}", [A]),  # bidi override inside
    (f"\ufeffRe: {A}", [A]),
    (f"Re: ({A})", [A]),
    (f"Re: [{A}]", [A]),
    (f"Re: {{{A}}}", [A]),
    (f"Re: <{A}>", [A]),
    (f"Re: [http://{A}]", [A]),
    (f"Re: {A}<http://{A}>", [A]),
    (f"Re: {A} <mailto:{A.lower()}>", [A]),
    (f"Re: [mailto:{A}]", [A]),
    (f"Case {A}", [A]),
    (f"Case #{A}: done.", [A]),
    (f"案件{A}已处理", [A]),
    (f"Re: {A} and {B}", [A, B]),
    (f"Fwd: {B}, {A}, {B}.", [B, A]),
    (f"Merge {A} {C} {D}", [A, C, D]),
    (f"Re: [Ticket#4411] {A} [RT #12345]", [A]),
    (f"Re: {broken(A)} {B}", [B]),
    (f"Re: {A}\r\n", [A]),
    # Crockford lenient reading: O -> 0, I/L -> 1.
    (f"Re: {make_id('10ABCDE').replace('0', 'O').replace('1', 'I')}", [make_id("10ABCDE")]),
    (f"Re: {make_id('10ABCDE').replace('1', 'l')}", [make_id("10ABCDE")]),
    # Not IDs.
    (f"Re: {A[:-1]}", []),
    (f"Re: {broken(A)}", []),
    (f"Re: X{A}", []),
    (f"Re: 9{A}", []),
    (f"Re: {A}X", []),
    (f"Re: {A}7", []),
    (f"Re: {A.replace('-', '')}", []),
    (f"Re: {A[:3]}--{A[4:8]}-{A[9:]}", []),
    ("Re: ABU-UUUU-UUUU", []),
    ("[Ticket#4411] Re: phishing", []),
    ("[CSIRT#2015092310000001] Incident report", []),
    ("Issue 9876541: spam from your network", []),
    ("INC0012345 phishing site", []),
    ("[RT #12345] abuse complaint", []),
    ("Re: ABU report about 185.12.1.1", []),
    ("", []),
]


@pytest.mark.parametrize(("subject", "expected"), SUBJECTS, ids=[repr(s)[:60] for s, _ in SUBJECTS])
def test_subject_lines_yield_exactly_the_verified_ids_in_order(subject: str, expected: list[str]):
    assert find_case_ids(subject) == expected


def test_subject_table_is_large_enough():
    assert len(SUBJECTS) >= 60


def test_overlapping_candidate_does_not_hide_a_valid_id():
    # With a four-letter prefix "ABCD-ABCD-…" starts one candidate inside another.
    inner = make_id("1234567", "ABCD")
    assert find_case_ids("ABCD-" + inner, "ABCD") == [inner]


def test_megabytes_of_hostile_text_are_scanned_in_linear_time():
    hostile = [
        "ABU-" * 250_000,
        "ABU " * 250_000,
        "ABU" + " " * 1_000_000,
        "abu-1234 " * 100_000,
        ("é" + A[:-1] + " ") * 50_000,
    ]
    for text in hostile:
        start = time.perf_counter()
        find_case_ids(text)
        assert time.perf_counter() - start < 1.5, text[:20]


# --- bodies -------------------------------------------------------------------------------------------------
FILLER = "\n".join(f"log line {i}: connection from 192.0.2.{i % 250}" for i in range(60))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"Hello,\nregarding {A}, the site is back.\n", [A]),
        (f"Hello,\n\n\n\nsee {A}\n{FILLER}", [A]),
        (f"Report:\n{FILLER}\nAlso mentions {B} in pasted evidence.\n", []),
        (f"Thanks!\n{FILLER}\n> Your report was filed as {A}.\n", [A]),
        (f"Done.\n{FILLER}\n-----Original Message-----\nFrom: abuse\nSubject: {A}\n", [A]),
        (f"Done.\n{FILLER}\n----- Ursprüngliche Nachricht -----\nBetreff: {A}\n", [A]),
        (f"Fixed.\n{FILLER}\nOn Mon, 3 Jun 2024 at 10:00, Abuse Desk <abuse@example.org> wrote:\n{A}\n", [A]),
        (f"Erledigt.\n{FILLER}\nAm 03.06.2024 um 10:00 schrieb Abuse Desk <abuse@example.org>:\n{A}\n", [A]),
        (f"Corrigé.\n{FILLER}\nLe lun. 3 juin 2024 à 10:00, Abuse <abuse@example.org> a écrit :\n{A}\n", [A]),
        (f"Fixed.\n{FILLER}\nOn Mon, 3 Jun 2024 at 10:00, Abuse\n<abuse@example.org> wrote:\n{A}\n", [A]),
        (f"Fixed.\n{FILLER}\nFrom: Abuse Desk\nSent: Monday, June 3, 2024 10:00\nSubject: {A}\n", [A]),
        (f"Fixed.\n{FILLER}\n________________________________\nFrom: Abuse Desk\n{A}\n", [A]),
        (f"Erledigt.\n{FILLER}\nAm 03.06.2024 um 10:00 schrieb Abuse\n<abuse@example.org>:\n{A}\n", [A]),
        (f"Report.\n{FILLER}\nOn Monday the attacker wrote that {A} was fake.\n", []),
        (f"About {B}.\n{FILLER}\nstray {C}\n> {A}\n>> {B}\n", [B, A]),
        ("", []),
    ],
)
def test_body_ids_come_from_the_top_and_the_quoted_tail_only(body: str, expected: list[str]):
    assert find_case_ids_in_body(body) == expected


def test_first_lines_counts_non_empty_lines():
    body = "a\n\n\nb\n" + f"c {A}\n"
    assert find_case_ids_in_body(body, first_lines=3) == [A]
    assert find_case_ids_in_body(body, first_lines=2) == []
    assert find_case_ids_in_body(f"{A}\n", first_lines=0) == []


def test_body_with_other_prefix():
    case_id = make_id("ABCDEFG", "CERT")
    assert find_case_ids_in_body(f"> {case_id}", prefix="CERT") == [case_id]


def test_hostile_bodies_stay_fast():
    hostile = ["\n" * 1_000_000, ("On x wrote wrote " * 50_000 + "\n") * 2, "-" * 1_000_000, "> " * 500_000]
    for text in hostile:
        start = time.perf_counter()
        find_case_ids_in_body(text)
        assert time.perf_counter() - start < 2.0, text[:20]


# --- RFC 2047 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("Re: plain subject", "Re: plain subject"),
        (f"=?UTF-8?B?UmU6IA==?={A}", f"Re: {A}"),
        # The ID split across two B words (RFC 2047 §6.2: whitespace between encoded words is dropped).
        ("Re: =?UTF-8?B?QUJVLTdL?= =?UTF-8?B?M00tUTlEUA==?= tail", f"Re: {A} tail"),
        # Folded between the two words.
        ("Re: =?UTF-8?B?QUJVLTdL?=\r\n =?UTF-8?B?M00tUTlEUA==?=", f"Re: {A}"),
        ("=?utf-8?q?Re=3A_ABU-7K3M-Q9DP?=", f"Re: {A}"),
        ("=?utf-8?q?AW=3A_Ph?= =?utf-8?q?ishing_=C3=BC?=", "AW: Phishing ü"),
        # A UTF-8 sequence split across words is joined as bytes before decoding.
        ("=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=", "café"),
        ("=?UTF-8?B?5Zue5aSN77ya?= ABU", "回复： ABU"),
        ("=?iso-8859-1?q?Antw=3A_r=E9ponse?=", "Antw: réponse"),
        ("=?utf-8*en?q?hello?=", "hello"),  # RFC 2231 language tag
        ("=?UTF-8?B?QUJV?=", "ABU"),
        ("=?UTF-8?B?QUJVLTdLM00?=", "ABU-7K3M"),  # missing padding restored
        ("=?x-unknown?q?ABU_case?=", "ABU case"),  # unknown charset: UTF-8 guess
        ("=?gb2312?B?u9i4tA==?=", "回复"),
        ("=?UTF-8?B?!!!?= rest", "=?UTF-8?B?!!!?= rest"),  # malformed word kept raw
        ("=?UTF-8?X?abc?=", "=?UTF-8?X?abc?="),  # unknown encoding kept raw
        ("=?base64?q?abc?=", "abc"),  # transform codecs are not charsets
        ("Subject\r\n\tcontinued", "Subject\tcontinued"),
        ("a =?utf-8?q?b?= c", "a b c"),
        ("=?iso-8859-1?q?=E9?= =?utf-8?q?=C3=A9?=", "éé"),  # different charsets not byte-joined
        ("=?", "=?"),
    ],
)
def test_decode_header_text(raw: str, decoded: str):
    assert decode_header_text(raw) == decoded


def test_decoded_split_id_is_found():
    assert find_case_ids(decode_header_text("Re: =?UTF-8?B?QUJVLTdL?=\r\n =?UTF-8?B?M00tUTlEUA==?=")) == [A]


# --- properties ---------------------------------------------------------------------------------------------
_FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.text())
def test_find_case_ids_never_raises(text: str):
    result = find_case_ids(text)
    assert all(is_valid_case_id(case_id) for case_id in result)
    find_case_ids_in_body(text)
    decode_header_text(text)


@_FAST
@given(st.text(), st.text())
def test_a_minted_id_is_found_in_any_surrounding_text(before: str, after: str):
    case_id = new_case_id()
    assert case_id in find_case_ids(f"{before} {case_id} {after}")


@_FAST
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=2, max_size=10))
def test_minted_ids_are_always_valid(prefix: str):
    case_id = new_case_id(prefix)
    assert is_valid_case_id(case_id, prefix)
    assert is_valid_case_id(case_id.lower(), prefix)
