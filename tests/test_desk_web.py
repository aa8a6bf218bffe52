"""The desk over real HTTP (issue 20): a real uvicorn server, a store filled through SMTP, urllib as the
client. What each role reaches, the CSRF rule, the cookie, the SSO header, the headers on every answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.assembly import build_store
from gateway.http_security import SECURITY_HEADERS
from tests.desk_harness import PASSWORD, Client, Desk, backend_url, client_as, filled_store, start_server


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def desk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    tmp = Path(tmp_path_factory.mktemp("desk"))
    config, cases = filled_store(
        tmp,
        backend_url(request.param, tmp),
        trusted_user_header="X-Forwarded-User",
        trusted_proxies=["127.0.0.1"],
    )
    store = build_store(config)
    base, server, thread = start_server(config, store)
    running = Desk(base, server, thread, cases, store)
    yield running
    running.stop()
    store.engine.dispose()


@pytest.fixture(scope="module")
def untrusting_desk(desk: Desk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same store behind a desk that trusts only a proxy at 10.9.9.9: our 127.0.0.1 is not it."""
    from tests.conftest import make_config

    tmp = tmp_path_factory.mktemp("untrusting")
    url = desk.store.engine.url.render_as_string(hide_password=False)
    config = make_config(
        Path(tmp), url, web={"trusted_user_header": "X-Forwarded-User", "trusted_proxies": ["10.9.9.9"]}
    )
    base, server, thread = start_server(config, build_store(config))
    yield base
    server.should_exit = True
    thread.join(timeout=10)


def _headers_ok(answer) -> None:  # type: ignore[no-untyped-def]
    for name, value in SECURITY_HEADERS:
        assert answer.headers.get(name.decode()) == value.decode(), name


def test_healthz_answers_ok_with_the_security_headers(desk: Desk) -> None:
    answer = Client(desk.base).get("/healthz")
    assert (answer.status, answer.text) == (200, "ok")
    _headers_ok(answer)


def test_every_kind_of_answer_carries_the_security_headers(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    for path in (
        "/",
        "/static/desk.css",
        "/cases/ABU-0000-0000",
        "/nowhere",
        f"/cases/{desk.cases['plain']}",
    ):
        _headers_ok(client.get(path))
    _headers_ok(Client(desk.base).get("/login"))
    _headers_ok(Client(desk.base).post("/logout", {}))


def test_signed_out_pages_go_to_login_and_posts_are_refused(desk: Desk) -> None:
    client = Client(desk.base)
    answer = client.get("/")
    assert answer.status == 303 and answer.headers["location"] == "/login"
    assert client.post(f"/cases/{desk.cases['plain']}/close", {"csrf": "x"}).status == 403


def test_session_cookie_is_httponly_samesite_strict_path_root_and_not_secure_on_plain_http(
    desk: Desk,
) -> None:
    client = Client(desk.base)
    token = client.csrf("/login")
    answer = client.post("/login", {"username": "analyst", "password": PASSWORD, "csrf": token})
    cookie = next(v for k, v in answer.headers.items() if k.lower() == "set-cookie" and "desk_session=" in v)
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags


def test_session_cookie_is_secure_when_a_trusted_proxy_says_https(desk: Desk) -> None:
    client = Client(desk.base)
    token = client.csrf("/login")
    answer = client.post(
        "/login",
        {"username": "analyst", "password": PASSWORD, "csrf": token},
        **{"X-Forwarded-Proto": "https"},
    )
    cookie = next(v for k, v in answer.headers.items() if k.lower() == "set-cookie" and "desk_session=" in v)
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


def test_login_without_the_pre_session_csrf_cookie_is_refused(desk: Desk) -> None:
    answer = Client(desk.base).post("/login", {"username": "analyst", "password": PASSWORD, "csrf": "forged"})
    assert answer.status == 403


def test_wrong_password_and_disabled_user_do_not_log_in(desk: Desk) -> None:
    elsewhere = {"X-Forwarded-For": "198.51.100.1"}  # from the trusted proxy: a client of its own
    assert Client(desk.base).login("analyst", "wrong password!", **elsewhere).status == 401
    assert Client(desk.base).login("gone", **elsewhere).status == 401


def test_failed_logins_are_throttled_per_user_name_and_per_client(desk: Desk) -> None:
    client = Client(desk.base)
    for n in range(5):
        client.login("nobody-here", "wrong password!", **{"X-Forwarded-For": f"198.51.100.{10 + n}"})
    answer = client.login("nobody-here", "wrong password!", **{"X-Forwarded-For": "198.51.100.99"})
    assert answer.status == 429 and "Too many failed logins" in answer.text
    for n in range(5):
        client.login(f"sprayed{n}", "wrong password!", **{"X-Forwarded-For": "198.51.100.50"})
    answer = client.login("analyst", PASSWORD, **{"X-Forwarded-For": "198.51.100.50"})
    assert answer.status == 429
    assert client_as(desk.base, "analyst")  # the same user from another client still gets in


def test_failed_login_log_names_the_user_escaped_and_never_the_password(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="abuse_gateway.web"):
        Client(desk.base).login("evil\x1b[2Jname", "hunter2-secret-pw", **{"X-Forwarded-For": "198.51.100.2"})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "evil\\x1b[2Jname" in logged
    assert "hunter2-secret-pw" not in logged and "\x1b" not in logged


def test_post_without_the_csrf_token_is_403_and_changes_nothing(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    case_id = desk.cases["plain"]
    assert client.post(f"/cases/{case_id}/close", {}).status == 403
    assert client.post(f"/cases/{case_id}/close", {"csrf": "not-the-token"}).status == 403
    assert desk.store.show_case(case_id)["status"] == "open"


def test_support_sees_status_and_count_but_nothing_a_sender_wrote(desk: Desk) -> None:
    client = client_as(desk.base, "support")
    page = client.get(f"/cases/{desk.cases['plain']}")
    assert page.status == 200
    assert desk.cases["plain"] in page.text and "open" in page.text
    for content in ("SSH", "alice", "203.0.113", "victim", "reporter@"):
        assert content not in page.text
    assert "Work this case" not in page.text and "<form method=\"post\" action=\"/cases" not in page.text


def test_support_finds_a_case_by_the_id_as_a_reporter_quotes_it(desk: Desk) -> None:
    client = client_as(desk.base, "support")
    case_id = desk.cases["plain"]
    spoken = case_id.lower().replace("-", " ").replace("0", "o")
    answer = client.get("/search?q=" + spoken.replace(" ", "+"))
    assert answer.status == 303 and answer.headers["location"] == f"/cases/{case_id}"


def test_support_gets_the_same_404_for_content_urls_as_for_an_unknown_case(desk: Desk) -> None:
    client = client_as(desk.base, "support")
    unknown = client.get("/cases/ABU-0000-0000")
    assert unknown.status == 404
    case_id = desk.cases["pdf"]
    for path in (
        f"/cases/{case_id}/messages/1/raw",
        f"/cases/{case_id}/messages/1/attachments/1",
        f"/cases/{case_id}/messages/9/raw",
        "/admin",
        "/admin/audit",
        "/nowhere",
    ):
        answer = client.get(path)
        assert (answer.status, answer.body) == (404, unknown.body)


def test_support_and_admin_get_no_queue_of_reporters_and_subjects(desk: Desk) -> None:
    for role in ("support", "admin"):
        page = client_as(desk.base, role).get("/")
        assert page.status == 200 and "Find a case by its ID" in page.text
        assert "SSH" not in page.text and "evidence" not in page.text


def test_analyst_queue_lists_cases_and_withholds_the_csam_subject(desk: Desk) -> None:
    page = client_as(desk.base, "analyst").get("/").text
    for label in ("plain", "pdf", "hostile", "csam"):
        assert desk.cases[label] in page
    assert "SSH brute force" in page and "compartment test" not in page
    assert "withheld" in page


def test_analyst_gets_404_for_csam_content_and_the_case_page_shows_no_content(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    unknown = client.get("/cases/ABU-0000-0000")
    case_id = desk.cases["csam"]
    page = client.get(f"/cases/{case_id}")
    assert page.status == 200 and "compartment test" not in page.text and "alice" not in page.text
    raw = client.get(f"/cases/{case_id}/messages/1/raw")
    assert (raw.status, raw.body) == (404, unknown.body)


def test_csam_role_sees_content_only_after_a_reason_which_is_audited(desk: Desk) -> None:
    client = client_as(desk.base, "csam")
    case_id = desk.cases["csam"]
    page = client.get(f"/cases/{case_id}")
    assert "compartment test" not in page.text and 'name="reason"' in page.text
    token = client.csrf(f"/cases/{case_id}")
    assert client.post(f"/cases/{case_id}/view", {"csrf": token, "reason": "  "}).status == 400
    shown = client.post(f"/cases/{case_id}/view", {"csrf": token, "reason": "NCMEC report 42"})
    assert shown.status == 200 and "compartment test" in shown.text
    views = [a for a in desk.store.list_audit() if a["action"] == "viewed" and a["case_id"] == case_id]
    assert any(a["actor"] == "csam" and a["reason"] == "NCMEC report 42" for a in views)


def test_csam_raw_download_asks_for_a_reason_then_records_the_view(desk: Desk) -> None:
    client = client_as(desk.base, "csam")
    case_id = desk.cases["csam"]
    path = f"/cases/{case_id}/messages/1/raw"
    asked = client.get(path)
    assert asked.status == 200 and 'name="reason"' in asked.text
    token = client.csrf(path)
    answer = client.post(path, {"csrf": token, "reason": "evidence for the police"})
    assert answer.status == 200 and b"compartment test" in answer.body
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["content-disposition"].startswith("attachment;")
    views = [a for a in desk.store.list_audit() if a["action"] == "viewed" and "(raw)" in (a["target"] or "")]
    assert any(a["reason"] == "evidence for the police" for a in views)


def test_attachment_download_is_an_octet_stream_attachment_with_a_safe_ascii_name(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    answer = client.get(f"/cases/{desk.cases['pdf']}/messages/1/attachments/1")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["x-content-type-options"] == "nosniff"
    disposition = answer.headers["content-disposition"]
    assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+"', disposition), disposition
    assert any(a["action"] == "attachment" and a["actor"] == "analyst" for a in desk.store.list_audit())


def test_hostile_message_is_inert_text_on_the_case_page(desk: Desk) -> None:
    page = client_as(desk.base, "analyst").get(f"/cases/{desk.cases['hostile']}").text
    assert "<script>" not in page and "<img src=x" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;" in page
    assert "<U+202E>" in page.replace("&lt;", "<").replace("&gt;", ">")
    assert "\x1b" not in page and "\\x1b" in page
    assert 'href="https://phish' not in page and "phish[.]bad[.]example" in page
    assert re.search(r'<input class="copy" readonly value="https://phish\.bad\.example/login\?x=1"', page)


def test_search_finds_by_indicator_text_and_reporter(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    assert desk.cases["hostile"] in client.get("/search?q=hxxps://phish[.]bad[.]example/login?x=1").text
    assert desk.cases["plain"] in client.get("/search?q=brute+force").text
    reporter = desk.store.show_case(desk.cases["plain"])["reporter"]
    assert desk.cases["plain"] in client.get("/search?q=" + reporter).text


def test_queue_filters_and_pages_by_keyset(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    page = client.get("/?flag=csam").text
    assert desk.cases["csam"] in page and desk.cases["plain"] not in page
    assert "not one of" in client.get("/?status=bogus").text
    assert "Next page" not in client.get("/").text


def test_next_page_link_walks_the_whole_queue_once(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    import html

    from gateway.web import queue_pages

    monkeypatch.setattr(queue_pages, "PAGE_SIZE", 2)  # the server thread reads the module's constant
    client = client_as(desk.base, "analyst")
    seen: list[str] = []
    path: str | None = "/"
    while path is not None:
        page = client.get(path).text
        seen += re.findall(r'<td class="id"><a href="/cases/([A-Z0-9-]+)">', page)
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        path = html.unescape(found.group(1)) if found else None
        assert len(seen) < 50
    assert len(seen) == len(set(seen)) >= 4
    assert set(desk.cases.values()) <= set(seen)


def test_sso_header_from_a_trusted_proxy_names_the_user(desk: Desk) -> None:
    client = Client(desk.base)
    page = client.get("/", **{"X-Forwarded-User": "analyst"})
    assert page.status == 200 and "analyst (analyst)" in page.text
    token = client.csrf("/")  # the SSO user's session carries the CSRF token its forms need
    case_id = desk.cases["plain"]
    sso = {"X-Forwarded-User": "analyst"}
    assert client.request(f"/cases/{case_id}/hold", {"csrf": token}, sso).status == 303
    assert client.request(f"/cases/{case_id}/release", {"csrf": token}, sso).status == 303
    assert client.request(f"/cases/{case_id}/hold", {"csrf": "forged"}, sso).status == 403
    as_csam = client.get("/", **{"X-Forwarded-User": "csam"})  # the header, not an old cookie, decides
    assert "csam (csam)" in as_csam.text
    assert Client(desk.base).get("/", **{"X-Forwarded-User": "nobody"}).status == 403
    assert Client(desk.base).get("/", **{"X-Forwarded-User": "gone"}).status == 403


def test_sso_header_from_an_untrusted_peer_is_refused(
    untrusting_desk: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="abuse_gateway.web"):
        answer = Client(untrusting_desk).get("/", **{"X-Forwarded-User": "admin"})
    assert answer.status == 403
    assert any("untrusted peer" in r.getMessage() for r in caplog.records)


def test_actions_are_audited_with_the_signed_in_user(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    case_id = desk.cases["pdf"]
    token = client.csrf(f"/cases/{case_id}")
    assert client.post(f"/cases/{case_id}/hold", {"csrf": token}).status == 303
    assert client.post(f"/cases/{case_id}/assign", {"csrf": token, "assignee": "csam"}).status == 303
    assert client.post(f"/cases/{case_id}/note", {"csrf": token, "body": "<i>called them</i>"}).status == 303
    assert client.post(f"/cases/{case_id}/close", {"csrf": token}).status == 303
    view = desk.store.show_case(case_id)
    assert view["hold"] and view["status"] == "closed" and view["assignee"] == "csam"
    assert view["notes"][0]["author"] == "analyst"
    actions = {(a["actor"], a["action"]) for a in desk.store.list_audit()}
    assert {("analyst", "hold"), ("analyst", "assigned"), ("analyst", "note")} <= actions
    page = client.get(f"/cases/{case_id}").text
    assert "&lt;i&gt;called them&lt;/i&gt;" in page
    client.post(f"/cases/{case_id}/reopen", {"csrf": token})
    client.post(f"/cases/{case_id}/release", {"csrf": token})


def test_analyst_may_raise_possible_csam_but_not_confirm(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    case_id = desk.cases["plain"]
    token = client.csrf(f"/cases/{case_id}")
    assert client.post(f"/cases/{case_id}/csam", {"csrf": token, "kind": "csam", "reason": "x"}).status == 404
    assert not desk.store.show_case(case_id)["csam"]


def test_admin_adds_and_disables_a_user_and_reads_the_audit_trail(desk: Desk) -> None:
    client = client_as(desk.base, "admin")
    token = client.csrf("/admin")
    added = client.post(
        "/admin/users", {"csrf": token, "name": "newbie", "role": "support", "password": PASSWORD}
    )
    assert added.status == 303
    assert desk.store.users.get("newbie").role == "support"
    assert client.post("/admin/users/newbie/disable", {"csrf": token}).status == 303
    assert desk.store.users.get("newbie").disabled
    assert "user_add" in client.get("/admin/audit").text
    retention = client.get("/admin/retention?days=1")
    assert retention.status == 200 and "would remove 0" in retention.text
    assert "at least 365 days" in retention.text
    assert client_as(desk.base, "analyst").get("/admin").status == 404


def test_logout_ends_the_session(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    token = client.csrf("/")
    assert client.post("/logout", {"csrf": token}).status == 303
    assert client.get("/").status == 303


def test_the_smtp_process_never_loads_the_web_stack() -> None:
    """`serve` imports the composition root, which builds the desk lazily: no Starlette, Jinja2 or
    gateway.web in the process that faces the Internet."""
    import subprocess
    import sys

    probe = (
        "import sys, gateway.service, gateway.cli; "
        "web = ('gateway.web', 'starlette', 'jinja2', 'uvicorn'); "
        "print([m for m in sys.modules if m.startswith(web)])"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_csam_role_confirms_and_clears_with_a_reason_and_analyst_raises_possible(desk: Desk) -> None:
    case_id = desk.cases["hostile"]
    analyst = client_as(desk.base, "analyst")
    token = analyst.csrf(f"/cases/{case_id}")
    raised = analyst.post(
        f"/cases/{case_id}/csam", {"csrf": token, "kind": "possible", "reason": "pictures?"}
    )
    assert raised.status == 303
    assert desk.store.show_case(case_id)["possible_csam"]
    assert "&lt;script&gt;" not in analyst.get(f"/cases/{case_id}").text  # now in the compartment
    csam = client_as(desk.base, "csam")
    token = csam.csrf(f"/cases/{case_id}")
    assert csam.post(f"/cases/{case_id}/csam", {"csrf": token, "kind": "clear", "reason": ""}).status == 400
    assert (
        csam.post(f"/cases/{case_id}/csam", {"csrf": token, "kind": "clear", "reason": "text only"}).status
        == 303
    )
    view = desk.store.show_case(case_id)
    assert not view["possible_csam"] and not view["csam"]
    actions = {(a["actor"], a["action"]) for a in desk.store.list_audit()}
    assert {("analyst", "possible_csam_mark"), ("csam", "csam_clear")} <= actions


def test_merge_and_split_from_the_desk_move_messages_as_the_cli_does(desk: Desk) -> None:
    client = client_as(desk.base, "analyst")
    source, target = desk.cases["plain"], desk.cases["pdf"]
    token = client.csrf(f"/cases/{source}")
    assert client.post(f"/cases/{source}/merge", {"csrf": token, "into": "not an id"}).status == 400
    merged = client.post(f"/cases/{source}/merge", {"csrf": token, "into": target.lower()})
    assert merged.status == 303 and merged.headers["location"] == f"/cases/{target}?done=merged"
    assert len(desk.store.show_case(target)["messages"]) == 2
    assert desk.store.show_case(source)["status"] == "merged"
    split = client.post(f"/cases/{target}/split", {"csrf": token, "index": "2"})
    assert split.status == 303
    new_case = split.headers["location"].split("/")[2].split("?")[0]
    assert new_case not in (source, target)
    assert "SSH brute force" in client.get(f"/cases/{new_case}").text
    actions = {(a["actor"], a["action"]) for a in desk.store.list_audit()}
    assert ("analyst", "merge") in actions and ("analyst", "split") in actions
