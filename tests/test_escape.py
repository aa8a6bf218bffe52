"""escape_text and the one-pass defang: the table of exact outputs, properties, pathological inputs."""

from __future__ import annotations

import re
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.defang import defang
from parsers.escape import escape_text, refang
from parsers.indicators import extract_indicators
from parsers.urlscan import make_suffix_extractor

CASES: list[tuple[str, str]] = [
    # real report phrasing
    ("Please take down https://login-paypa1.example/verify?id=3 asap",
     "Please take down hxxps://login-paypa1[.]example/verify?id=3 asap"),
    ("Phishing at http://evil-chat.example/login", "Phishing at hxxp://evil-chat[.]example/login"),
    ("see https://bad.example/x.", "see hxxps://bad[.]example/x."),
    ("Visit https://bad.example, then http://worse.example!",
     "Visit hxxps://bad[.]example, then hxxp://worse[.]example!"),
    ("Is https://bad.example/a?", "Is hxxps://bad[.]example/a?"),
    ("It is at bad.example.", "It is at bad[.]example."),
    ("CSAM link: https://img.bad.example/p/1.jpg", "CSAM link: hxxps://img[.]bad[.]example/p/1.jpg"),
    # credentials, times, versions, prose abbreviations: untouched
    ("Username: bob", "Username: bob"),
    ("Password: s3cr3t:pw", "Password: s3cr3t:pw"),
    ("Password: x:y:z", "Password: x:y:z"),
    ("Password: a:b:c", "Password: a:b:c"),
    ("at 10:30", "at 10:30"),
    ("10:30:45 UTC", "10:30:45 UTC"),
    ("2024-05-01T10:30:00Z", "2024-05-01T10:30:00Z"),
    ("v1.2.3", "v1.2.3"),
    ("version 1.2.3", "version 1.2.3"),
    ("e.g. this", "e.g. this"),
    ("i.e. that", "i.e. that"),
    ("Note:x", "Note:x"),
    ("C:\\Users\\x\\invoice.pdf", "C:\\Users\\x\\invoice.pdf"),
    ("ratio 3:1", "ratio 3:1"),
    ("invoice.pdf", "invoice.pdf"),
    ("file.txt", "file.txt"),
    ("node.js", "node.js"),
    ("index.html", "index.html"),
    ("U.S.A.", "U.S.A."),
    ("Dr.Smith", "Dr.Smith"),
    ("999.1.1.1", "999.1.1.1"),
    ("std::string", "std::string"),
    ("a::b", "a::b"),
    ("price 3.50", "price 3.50"),
    # filenames on real TLDs are over-escaped on purpose
    ("report.zip", "report[.]zip"),
    ("movie.mov", "movie[.]mov"),
    ("README.md", "README[.]md"),
    # bare domains
    ("x.com", "x[.]com"),
    ("evil.co.uk", "evil[.]co[.]uk"),
    ("sub.evil.co.uk.", "sub[.]evil[.]co[.]uk."),
    ("EVIL.COM", "EVIL[.]COM"),
    ("www.foo", "www[.]foo"),
    ("www.bad.example", "www[.]bad[.]example"),
    ("foo.test", "foo[.]test"),
    ("_dmarc.bad.example", "_dmarc[.]bad[.]example"),
    ("in (bad.example)", "in (bad[.]example)"),
    ("'bad.example'", "'bad[.]example'"),
    # IDN
    ("bücher.example", "bücher[.]example"),
    ("пример.рф", "пример[.]рф"),
    ("xn--bcher-kva.example", "xn--bcher-kva[.]example"),
    ("https://bücher.example/x", "hxxps://bücher[.]example/x"),
    # e-mail
    ("user@bad.example", "user[@]bad[.]example"),
    ("john.doe+x@mail.bad.example", "john[.]doe+x[@]mail[.]bad[.]example"),
    ("<user@bad.example>", "<user[@]bad[.]example>"),
    ("mailto:a@b.example", "mailto:a[@]b[.]example"),
    ("@handle", "@handle"),
    ("@bad.example", "@bad[.]example"),
    # IP addresses
    ("1.2.3.4", "1[.]2[.]3[.]4"),
    ("1.2.3.4:8080", "1[.]2[.]3[.]4:8080"),
    ("http://192.0.2.1/a", "hxxp://192[.]0[.]2[.]1/a"),
    ("2001:db8::1", "2001[:]db8[:][:]1"),
    ("::1", "[:][:]1"),
    ("fe80::1%eth0", "fe80[:][:]1%eth0"),
    ("::ffff:192.0.2.1", "[:][:]ffff[:]192[.]0[.]2[.]1"),
    ("http://[2001:db8::1]/", "hxxp://[2001[:]db8[:][:]1]/"),
    ("https://[2001:db8::1]:8443/x", "hxxps://[2001[:]db8[:][:]1]:8443/x"),
    # brackets, markdown, angle brackets
    ("(https://a.example/b)", "(hxxps://a[.]example/b)"),
    ("<https://a.example>", "<hxxps://a[.]example>"),
    ("[here](https://a.example/b)", "[here](hxxps://a[.]example/b)"),
    ("[a.example](https://a.example)", "[a[.]example](hxxps://a[.]example)"),
    ("https://en.wikipedia.example/wiki/Foo_(bar)", "hxxps://en[.]wikipedia[.]example/wiki/Foo_(bar)"),
    ('<a href="http://bad.example/x">', '<a href="hxxp://bad[.]example/x">'),
    ("**https://bad.example**", "**hxxps://bad[.]example**"),
    # ports, queries, fragments, userinfo
    ("http://bad.example:8080/p", "hxxp://bad[.]example:8080/p"),
    ("https://bad.example/p?a=1&b=2#frag", "hxxps://bad[.]example/p?a=1&b=2#frag"),
    ("https://bad.example/r?u=https://next.example/",
     "hxxps://bad[.]example/r?u=hxxps://next[.]example/"),
    ("https://bad.example/go?to=evil.com", "hxxps://bad[.]example/go?to=evil[.]com"),
    ("https://user:pass@host.example/", "hxxps://user:pass[@]host[.]example/"),
    ("ftp://anon.user@ftp.bad.example/", "ftp[://]anon[.]user[@]ftp[.]bad[.]example/"),
    ("http://localhost/x", "hxxp://localhost/x"),
    ("HTTPS://BAD.EXAMPLE/X", "hxxps://BAD[.]EXAMPLE/X"),
    ("HtTp://bad.example", "hxxp://bad[.]example"),
    # other schemes
    ("ftp://files.bad.example/a", "ftp[://]files[.]bad[.]example/a"),
    ("sftp://bad.example", "sftp[://]bad[.]example"),
    ("ws://bad.example/sock", "ws[://]bad[.]example/sock"),
    ("wss://bad.example", "wss[://]bad[.]example"),
    ("file:///C:/x", "file[://]/C:/x"),
    ("svn+ssh://bad.example/r", "svn+ssh[://]bad[.]example/r"),
    ("http://", "hxxp://"),
    ("http://http://", "hxxp://hxxp://"),
    ("xhttp://a", "xhttp[://]a"),
    # already defanged by the reporter: recognised, canonicalised, never doubled
    ("hxxps://bad[.]example", "hxxps://bad[.]example"),
    ("hxxp://bad[.]example/x", "hxxp://bad[.]example/x"),
    ("hXXps://bad.example", "hxxps://bad[.]example"),
    ("bad(.)example", "bad[.]example"),
    ("bad[dot]example", "bad[.]example"),
    ("bad{.}example", "bad[.]example"),
    ("user[at]bad.example", "user[@]bad[.]example"),
    ("user(at)bad(dot)example", "user[@]bad[.]example"),
    ("user[@]bad[.]example", "user[@]bad[.]example"),
    ("http[:]//bad.example", "hxxp://bad[.]example"),
    ("http[://]bad.example", "hxxp://bad[.]example"),
    ("ftp[://]bad[.]example", "ftp[://]bad[.]example"),
    ("2001[:]db8[:][:]1", "2001[:]db8[:][:]1"),
    ("1[.]2[.]3[.]4", "1[.]2[.]3[.]4"),
    ("the dot (.) key", "the dot (.) key"),
    ("file[.]txt", "file[.]txt"),
    # mixed lines
    ("From: a@b.example To: c@d.example", "From: a[@]b[.]example To: c[@]d[.]example"),
    ("hosts: a.example,b.example;c.example", "hosts: a[.]example,b[.]example;c[.]example"),
    ("Login at https://bad.example\nUsername: bob\nPassword: x:y:z\n",
     "Login at hxxps://bad[.]example\nUsername: bob\nPassword: x:y:z\n"),
]  # fmt: skip


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 80


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_escape_table(text: str, expected: str) -> None:
    assert escape_text(text) == expected
    assert escape_text(expected) == expected  # idempotent on every row


def test_refang() -> None:
    assert refang("hxxps://bad[.]example/x user[at]bad(dot)example 2001[:]db8[:][:]1") == (
        "https://bad.example/x user@bad.example 2001:db8::1"
    )
    assert refang("hxxp is a word") == "hxxp is a word"  # only refanged in front of ://


def test_suffix_list_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # Why: the gateway runs without outbound access; a fetch would hang or fail per message.
    def no_network(*_a: object, **_k: object) -> None:
        raise AssertionError("network used")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    extractor = make_suffix_extractor()
    assert extractor.extract_str("evil.co.uk").suffix == "co.uk"


# Fragments that make hypothesis build URL-shaped text far more often than plain random text would.
_PIECES = [
    "http", "https", "HTTP", "hxxp", "hxxps", "ftp", "://", "[://]", "[:]", ":", "/", "//", ".", "[.]", "(.)",
    "[dot]", "@", "[@]", "[at]", "(at)", "www", "com", "example", "co.uk", "zip", "bücher", "рф", "xn--p1ai",
    "1", "255", "999", "::", "2001", "db8", "a", "B", "-", "_", " ", "\n", "(", ")", "[", "]", "<", ">", "?",
    "#", "=", "&", ",", "'", '"', "*", "%", "{", "}",
]  # fmt: skip
urlish = st.lists(st.sampled_from(_PIECES) | st.text(max_size=3), max_size=30).map("".join)
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(urlish)
def test_idempotent(text: str) -> None:
    once = escape_text(text)
    assert escape_text(once) == once


@_SETTINGS
@given(urlish)
def test_no_live_http_survives(text: str) -> None:
    assert re.search(r"https?://", escape_text(text), re.IGNORECASE) is None


@_SETTINGS
@given(urlish)
def test_escaped_text_keeps_every_indicator(text: str) -> None:
    assert set(extract_indicators(escape_text(text))) >= set(extract_indicators(text))


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_one_pass_defang_matches_escape_and_extract_on_table(text: str, expected: str) -> None:
    # Intake uses the one-pass form; it must answer exactly what the two separate functions do.
    result = defang(text)
    assert result.escaped == expected == escape_text(text)
    assert list(result.indicators) == extract_indicators(text)


@_SETTINGS
@given(urlish)
def test_one_pass_defang_matches_escape_and_extract(text: str) -> None:
    result = defang(text)
    assert result.escaped == escape_text(text)
    assert list(result.indicators) == extract_indicators(text)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    escape_text(text)
    extract_indicators(text)


@pytest.mark.parametrize(
    "unit", ["a.", "http://", ".", "@", "a@", "-", "a.b@", "[.]", "1.", ":", "a:", "hxxp[://]"]
)
def test_pathological_megabyte_inputs(unit: str) -> None:
    # Run only: a regex with catastrophic backtracking would hang here. Timing is checked by hand.
    text = unit * (1_000_000 // len(unit))
    escape_text(text)
    extract_indicators(text)
    defang(text)
