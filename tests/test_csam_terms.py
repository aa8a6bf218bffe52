"""The CSAM term matcher: each language's wording, obfuscated variants, and ordinary near-misses."""

import pytest

from parsers.csam_terms import TermMatcher, match_terms

MATCHER = TermMatcher()


@pytest.mark.parametrize(
    "text",
    [
        "Found CSAM on your server",
        "this is child sexual abuse material",
        "child pornography hosted at",
        "Kinderpornografie auf Ihrem Server",
        "Darstellungen sexuellen Kindesmissbrauchs",
        "contenu pédopornographique",
        "pornografía infantil en su sitio",
        "abuso sexual infantil",
        "pornografia infantil no site",
        "детская порнография на сайте",
        "网站上有儿童色情内容",
        "児童ポルノの画像",
        "児童性的虐待",
        "CSEM",
        "cp links here",
    ],
)
def test_each_language_wording_matches(text: str) -> None:
    assert MATCHER.match(text)


@pytest.mark.parametrize(
    "text",
    ["c.s.a.m", "C S A M", "Kinder\u200bpornografie", "child-porn", "ＣＳＡＭ", "KINDERPORNOGRAFIE"],
)
def test_obfuscated_variants_match(text: str) -> None:
    assert MATCHER.match(text)


@pytest.mark.parametrize(
    "text",
    [
        "cp -r dir /tmp",
        "CP 12345 Berlin",
        "C.P. Smith",
        "scp file host:",
        "CSP header",
        "pornography",
        "child",
    ],
)
def test_ordinary_text_does_not_match(text: str) -> None:
    assert MATCHER.match(text) == []


def test_match_terms_uses_a_configured_list() -> None:
    assert match_terms("a Foo-Bar report", ["foo bar"]) == ["foo bar"]
