"""Indicator extraction, normalisation and desk queries."""

from __future__ import annotations

import pytest

from parsers.escape import escape_text
from parsers.indicators import extract_indicators, indicator_host, normalize_indicator, parse_indicator_query
from parsers.types import Indicator

U, D, V4, V6, E = "url", "domain", "ipv4", "ipv6", "email"

EXTRACT: list[tuple[str, list[tuple[str, str]]]] = [
    ("Please take down https://login-paypa1.example/verify?id=3 asap",
     [(U, "https://login-paypa1.example/verify?id=3"), (D, "login-paypa1.example")]),
    ("see https://bad.example/x.", [(U, "https://bad.example/x"), (D, "bad.example")]),
    ("(https://a.example/b)", [(U, "https://a.example/b"), (D, "a.example")]),
    ("<https://a.example>", [(U, "https://a.example"), (D, "a.example")]),
    ("[t](https://a.example/b)", [(U, "https://a.example/b"), (D, "a.example")]),
    ("HTTPS://BAD.Example:443/Path", [(U, "https://bad.example/Path"), (D, "bad.example")]),
    ("http://bad.example:8080/", [(U, "http://bad.example:8080/"), (D, "bad.example")]),
    ("hxxps://bad[.]example/x", [(U, "https://bad.example/x"), (D, "bad.example")]),
    ("bad(.)example bad[dot]example", [(D, "bad.example")]),
    ("user[at]Bad.Example", [(E, "user@bad.example"), (D, "bad.example")]),
    ("John.Doe@bad.example", [(E, "john.doe@bad.example"), (D, "bad.example")]),
    ("bücher.example", [(D, "xn--bcher-kva.example"), (D, "bücher.example")]),
    ("xn--bcher-kva.example", [(D, "xn--bcher-kva.example"), (D, "bücher.example")]),
    ("https://bücher.example/x",
     [(U, "https://xn--bcher-kva.example/x"), (U, "https://bücher.example/x"),
      (D, "xn--bcher-kva.example"), (D, "bücher.example")]),
    ("a@пример.рф",
     [(E, "a@xn--e1afmkfd.xn--p1ai"), (E, "a@пример.рф"), (D, "xn--e1afmkfd.xn--p1ai"), (D, "пример.рф")]),
    ("1.2.3.4 and 999.1.1.1 and v1.2.3 and 1.2.3", [(V4, "1.2.3.4")]),
    ("http://192.0.2.1/a", [(U, "http://192.0.2.1/a"), (V4, "192.0.2.1")]),
    ("2001:DB8:0::1", [(V6, "2001:db8::1")]),
    ("2001[:]db8[:][:]1", [(V6, "2001:db8::1")]),
    ("http://[2001:db8::1]:80/x", [(U, "http://[2001:db8::1]/x"), (V6, "2001:db8::1")]),
    ("evil.co.uk evil.co.uk. EVIL.CO.UK", [(D, "evil.co.uk")]),
    ("file.txt invoice.pdf node.js e.g. i.e. 10:30 Password: x:y:z", []),
    ("https://a.example/files/report.zip", [(U, "https://a.example/files/report.zip"), (D, "a.example")]),
    ("https://a.example/r?u=https://b.example/",
     [(U, "https://a.example/r?u=https://b.example/"), (D, "a.example"), (U, "https://b.example/"),
      (D, "b.example")]),
    ("ftp://user:pw@files.bad.example/a",
     [(U, "ftp://user:pw@files.bad.example/a"), (D, "files.bad.example")]),
    ("http://localhost/x", [(U, "http://localhost/x"), (D, "localhost")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), EXTRACT)
def test_extract(text: str, expected: list[tuple[str, str]]) -> None:
    assert extract_indicators(text) == [Indicator(k, v) for k, v in expected]  # type: ignore[arg-type]
    # the escaped text shown to the desk yields the same indicators
    assert extract_indicators(escape_text(text)) == [Indicator(k, v) for k, v in expected]  # type: ignore[arg-type]


def test_dedupe_keeps_first_appearance() -> None:
    text = "b.example a.example hxxp://b[.]example B.EXAMPLE a[.]example"
    assert extract_indicators(text) == [
        Indicator("domain", "b.example"),
        Indicator("domain", "a.example"),
        Indicator("url", "http://b.example"),
    ]


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("domain", "Bad.Example.", "bad.example"),
        ("domain", "bücher.example", "xn--bcher-kva.example"),
        ("domain", "bad[.]example", "bad.example"),
        ("domain", "no spaces.example", None),
        ("domain", "single", None),
        ("ipv4", "192.0.2.1", "192.0.2.1"),
        ("ipv4", "999.1.1.1", None),
        ("ipv4", "1.2.3", None),
        ("ipv6", "2001:DB8::0:1", "2001:db8::1"),
        ("ipv6", "[::1]", "::1"),
        ("email", "User@Bad.Example", "user@bad.example"),
        ("email", "@bad.example", None),
        ("url", "hxxps://Bad.Example:443/A?b=C", "https://bad.example/A?b=C"),
        ("url", "http://bad.example:8080", "http://bad.example:8080"),
        ("url", "https://", None),
    ],
)
def test_normalize(kind: str, value: str, expected: str | None) -> None:
    result = normalize_indicator(kind, value)  # type: ignore[arg-type]
    assert (result.value if result else None) == expected
    if result:
        assert result.kind == kind


@pytest.mark.parametrize(
    ("query", "kind", "value", "host"),
    [
        ("BAD[.]Example", D, "bad.example", "bad.example"),
        ("intranet.corp", D, "intranet.corp", "intranet.corp"),
        ("bücher.example", D, "xn--bcher-kva.example", "xn--bcher-kva.example"),
        (" hxxps://bad[.]example/x ", U, "https://bad.example/x", "bad.example"),
        ("<https://bad.example/x>", U, "https://bad.example/x", "bad.example"),
        ("u[at]x.example", E, "u@x.example", "x.example"),
        ("mailto:u@x.example", E, "u@x.example", "x.example"),
        ("1[.]2[.]3[.]4", V4, "1.2.3.4", "1.2.3.4"),
        ("2001[:]db8[:][:]1", V6, "2001:db8::1", "2001:db8::1"),
        ("http://[2001:db8::1]/", U, "http://[2001:db8::1]/", "2001:db8::1"),
    ],
)
def test_parse_indicator_query(query: str, kind: str, value: str, host: str) -> None:
    parsed = parse_indicator_query(query)
    assert parsed == Indicator(kind, value)  # type: ignore[arg-type]
    assert indicator_host(parsed) == host


@pytest.mark.parametrize("query", ["", "foo", "bad.example/login", "999.1.1.1", "two words.example", "10:30"])
def test_parse_indicator_query_rejects(query: str) -> None:
    assert parse_indicator_query(query) is None
