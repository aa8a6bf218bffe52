"""Issue 21, the pure parts: status tokens (forgery, rotation, revocation), the reporter's language, the
one placeholder rule, and the per-client rate limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from gateway.reporter_texts import (
    LANGUAGES,
    TemplateError,
    check_template,
    choose_language,
    render,
    reply_template,
    texts,
)
from gateway.status_page import RateLimiter, client_key
from parsers.status_token import make_status_token, split_status_token, status_token_valid
from parsers.types import ParsedMessage

CASE = "ABU-4V56-RJBV"
OLD, NEW = b"o" * 64, b"n" * 64


def _valid(
    token: str, generation: int = 0, recipients: tuple[str, ...] = ("r@example.net",), keys=(NEW,)
) -> bool:
    parts = split_status_token(token)
    return parts is not None and status_token_valid(parts, generation, recipients, keys)


def test_status_token_verifies_for_its_case_generation_and_reporter_only() -> None:
    token = make_status_token(CASE, 0, "R@Example.net", NEW)
    assert "example" not in token and token.startswith("abu-4v56-rjbv.0.")
    assert _valid(token)
    assert not _valid(token, recipients=("other@example.net",))
    assert not _valid(token, generation=1)  # revoked: the case's generation moved on
    assert not _valid(token, keys=(OLD,))


def test_status_token_minted_with_the_old_key_still_verifies_after_rotation() -> None:
    token = make_status_token(CASE, 2, "r@example.net", OLD)
    assert _valid(token, generation=2, keys=(NEW, OLD))
    assert not _valid(token, generation=2, keys=(NEW,))


@given(st.text(max_size=200))
def test_junk_tokens_never_raise_and_never_verify(junk: str) -> None:
    assert not _valid(junk)


def test_a_changed_case_id_in_the_token_does_not_verify() -> None:
    token = make_status_token(CASE, 0, "r@example.net", NEW)
    other = "abu-2222-2222" + token[len("abu-4v56-rjbv") :]
    assert not _valid(other)


@pytest.mark.parametrize(
    ("header", "text", "expected"),
    [
        ("de-DE", "see attached", "de"),
        ("fr, en", "", "fr"),
        ("pt_BR", "", "pt"),
        ("it", "", "en"),  # not one of ours, no text: the default
        (None, "Bonjour, je vous signale un site de hameçonnage qui imite ma banque depuis hier.", "fr"),
        (None, "こんにちは。銀行を装ったフィッシングサイトを見つけましたので報告します。", "ja"),
        (None, "Здравствуйте, сообщаю о фишинговом сайте, который выдаёт себя за мой банк.", "ru"),
        (None, "ok", "en"),  # too short to tell
        (None, "Ciao, vi segnalo un sito di phishing che imita la mia banca da ieri sera.", "en"),  # Italian
    ],
)
def test_language_comes_from_content_language_then_a_confident_identifier(
    header: str | None, text: str, expected: str
) -> None:
    headers = (("Content-Language", header),) if header else ()
    assert choose_language(ParsedMessage(text=text, headers=headers), "en") == expected


def test_every_language_has_every_key_the_english_texts_have() -> None:
    english = set(texts("en", None))
    for language in LANGUAGES:
        shipped = texts(language, None)
        assert set(shipped) == english
        for key in english - {"receipt_attachment"}:
            if language != "en":
                assert shipped[key] != texts("en", None)[key] or key.startswith("page_messages"), (
                    language,
                    key,
                )


def test_templates_may_name_only_our_values() -> None:
    with pytest.raises(TemplateError, match="subject"):
        check_template("Re: {subject}", "t")
    with pytest.raises(TemplateError):
        check_template("{case_id.__class__}", "t")
    assert render("{case_id} {unknown} {{", {"case_id": "X"}) == "X {unknown} {{"


def test_operator_overrides_a_text_and_adds_a_reply_template(tmp_path) -> None:
    (tmp_path / "de.toml").write_text('confirmation_subject = "[{case_id}] Danke, angekommen"\n')
    (tmp_path / "hello.de.txt").write_text("Subject: Hallo\n\nHallo {case_id}\n")
    assert texts("de", str(tmp_path))["confirmation_subject"] == "[{case_id}] Danke, angekommen"
    assert texts("de", str(tmp_path))["state_closed"] == "abgeschlossen"
    assert reply_template("hello", "de", str(tmp_path)) == ("Hallo", "Hallo {case_id}\n")
    assert reply_template("need-more-info", "de", str(tmp_path))[0].startswith("Wir benötigen")
    (tmp_path / "need-more-info.txt").write_text("Subject: Ours\n\nOurs\n")  # the operator's wins
    assert reply_template("need-more-info", "de", str(tmp_path))[0] == "Ours"
    with pytest.raises(TemplateError):
        reply_template("../etc/passwd", "en", str(tmp_path))


def _request(host: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "client": (host, 1234), "headers": headers, "method": "GET", "path": "/"})


def test_rate_limit_counts_an_ipv6_64_as_one_client_and_refills_with_time() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    a, b = client_key(_request("2001:db8:1:2::1"), ()), client_key(_request("2001:db8:1:2:ffff::9"), ())
    assert a == b == "2001:db8:1:2::/64"
    assert [limiter.allow(a), limiter.allow(b), limiter.allow(a)] == [True, True, False]
    assert limiter.allow(client_key(_request("192.0.2.1"), ()))
    now[0] += 1.0  # one token a second
    assert limiter.allow(a) and not limiter.allow(a)


def test_forwarded_for_counts_only_behind_a_trusted_proxy() -> None:
    assert client_key(_request("10.0.0.1", "198.51.100.7"), ()) == "10.0.0.1"
    assert client_key(_request("10.0.0.1", "1.2.3.4, 198.51.100.7"), ("10.0.0.1",)) == "198.51.100.7"


def test_a_broken_override_falls_back_to_the_shipped_text(tmp_path) -> None:
    (tmp_path / "fr.toml").write_text('confirmation_body = "Vous avez écrit : {text}"\n')
    assert texts("fr", str(tmp_path))["confirmation_body"] == texts("fr", None)["confirmation_body"]


def test_available_templates_lists_the_shipped_and_the_operators(tmp_path) -> None:
    from gateway.reporter_texts import available_templates

    (tmp_path / "abuse-gone.txt").write_text("Subject: x\n\ny\n")
    (tmp_path / "abuse-gone.de.txt").write_text("Subject: x\n\ny\n")
    assert available_templates(str(tmp_path)) == ["abuse-gone", "action-taken", "need-more-info", "not-ours"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_shipped_reply_template_exists_in_every_language_with_a_subject(language: str) -> None:
    from gateway.reporter_texts import REPLY_TEMPLATES

    for name in REPLY_TEMPLATES:
        subject, body = reply_template(name, language, None)
        assert subject and "{case_id}" in body
        if language != "en":
            assert subject != reply_template(name, "en", None)[0]


def test_status_page_trusts_a_proxy_network_as_the_desk_does_and_refuses_a_bad_one() -> None:
    """`[status] trusted_proxies` reads like `[web] trusted_proxies` (gateway/http_security.forwarded_client):
    a network is a network, the nearest hop that is no proxy is the client, and a typo is a config error
    instead of a proxy silently never trusted."""
    import pytest

    from gateway.config import ConfigError, load_config

    assert client_key(_request("10.1.2.3", "1.2.3.4, 198.51.100.7"), ("10.0.0.0/8",)) == "198.51.100.7"
    assert client_key(_request("10.1.2.3", "198.51.100.7, 10.9.9.9"), ("10.0.0.0/8",)) == "198.51.100.7"
    with pytest.raises(ConfigError, match="not an IP address or network"):
        load_config(None, environ={"ABUSE_GATEWAY_STATUS_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"})
