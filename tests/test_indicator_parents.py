"""Indicators without false parents or lost URLs (issue 16, point 6): what a report's odd spellings index.

Each case is pinned twice: on the pure parsers (one line of text), and once through a real SMTP conversation
with the gateway, asserting on the indicators the store kept for the case (fixture indicator_parents.eml).
"""

from __future__ import annotations

import pytest

from parsers.defang import defang
from parsers.escape import escape_text
from parsers.indicators import extract_indicators
from tests.conftest import RunningGateway, load_eml

D, U, E, V4 = "domain", "url", "email", "ipv4"


def _pairs(text: str) -> set[tuple[str, str]]:
    return {(i.kind, i.value) for i in extract_indicators(text)}


def _escapes_stably(text: str) -> None:
    """Escaping twice changes nothing and the escaped text yields the same indicators as the original."""
    once = escape_text(text)
    assert escape_text(once) == once
    assert extract_indicators(once) == extract_indicators(text)
    assert defang(text).escaped == once


# Already right before this change (pinned so it stays so): markdown links and extra slashes after a scheme.
def test_markdown_link_gives_url_without_bracket_paren() -> None:
    text = "[x](https://a.example/b.png)"
    assert _pairs(text) == {(U, "https://a.example/b.png"), (D, "a.example")}
    _escapes_stably(text)


def test_triple_slash_url_is_the_url_on_the_host() -> None:
    text = "http:///host.example/x"
    assert _pairs(text) == {(U, "http://host.example/x"), (D, "host.example")}
    _escapes_stably(text)


@pytest.mark.parametrize(
    "text",
    ["foo[-]bar.com", "[www].example.com", "x[y].example.com", "foo[bar.com", "mail.google[-].com"],
)
def test_unknown_bracket_marker_never_indexes_a_parent_domain(text: str) -> None:
    assert _pairs(text) == set()
    _escapes_stably(text)


@pytest.mark.parametrize("text", ["(evil.com)", "[evil.com]", "{evil.com}"])
def test_brackets_around_a_whole_host_still_index_it(text: str) -> None:
    assert _pairs(text) == {(D, "evil.com")}


def test_all_digit_label_after_broken_marker_is_not_a_domain() -> None:
    text = "192[.168.1.1"
    assert _pairs(text) == set()  # already held before: the last label is digits
    _escapes_stably(text)


def test_email_host_needs_a_public_suffix_like_a_bare_domain() -> None:
    assert _pairs("foo@gmail.comahhh") == set()
    assert _pairs("a.b@gmail.comahhh") == set()
    assert _pairs("foo@gmail.com") == {(E, "foo@gmail.com"), (D, "gmail.com")}
    _escapes_stably("foo@gmail.comahhh and foo@gmail.com")


@pytest.mark.parametrize(
    ("text", "address"),
    [("0177.0.0.1", "127.0.0.1"), ("010.0.0.1", "8.0.0.1"), ("0300.0250.0.1", "192.168.0.1")],
)
def test_leading_zero_octets_are_escaped_and_indexed_as_browsers_read_them(text: str, address: str) -> None:
    escaped = escape_text(f"calls {text} back")
    assert escaped == f"calls {text.replace('.', '[.]')} back"
    assert _pairs(text) == {(V4, address)}
    _escapes_stably(text)


@pytest.mark.parametrize(
    ("text", "offered"),
    [
        ("a.example/files/evil.com", {(D, "a.example")}),
        ("example.com/path/www.evil.com", {(D, "example.com")}),
        ("bad.example/u/foo@gmail.com", {(D, "bad.example")}),
        ("/files/report.zip", set()),
        (
            "https://a.example/r/www.victim.example/x",
            {(U, "https://a.example/r/www.victim.example/x"), (D, "a.example")},
        ),
        ("//evil.example/x", {(D, "evil.example")}),  # scheme-relative: the host is an authority
    ],
)
def test_hosts_inside_a_path_are_not_offered_with_or_without_scheme(
    text: str, offered: set[tuple[str, str]]
) -> None:
    assert _pairs(text) == offered
    assert "[.]" in escape_text(text).rpartition("/")[2] or "." not in text.rpartition("/")[2]
    _escapes_stably(text)


def test_report_over_smtp_stores_no_false_parents_and_no_lost_urls(gateway: RunningGateway) -> None:
    code, _ = gateway.send(load_eml("indicator_parents.eml"))
    assert code == 250
    gateway.wait_idle()
    cases = gateway.store.list_cases()
    assert len(cases) == 1, cases
    view = gateway.store.show_case(cases[0]["case_id"])
    pairs = {(i["kind"], i["value"]) for i in view["indicators"]}
    for wanted in [
        (U, "https://a.example/b.png"),
        (U, "http://host.example/x"),
        (V4, "127.0.0.1"),
        (D, "files.example.org"),
        (U, "https://cdn.example.net/r/www.victim.example/login"),
    ]:
        assert wanted in pairs, wanted
    values = {v for _, v in pairs}
    for unwanted in [
        "bar.com",
        "example.com",
        "192",
        "168.1.1",
        "mail.google",
        "gmail.comahhh",
        "foo@gmail.comahhh",
        "innocent.example.com",
        "www.victim.example",
    ]:
        assert unwanted not in values, unwanted
    assert not any("](" in v for v in values)
    text = view["messages"][0]["text"]
    assert "0177[.]0[.]0[.]1" in text and "foo[-]bar[.]com" in text
