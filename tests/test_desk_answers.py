"""The desk answers reporters from the case page (issues 20 and 21): the reply and reporter-state forms are
POSTs with CSRF that call what `cases reply` and `cases state` call, the mail leaves through the running
gateway's outbox to the smarthost, and support may answer "we have it" without seeing the report."""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage

import pytest

from gateway.assembly import build_store
from gateway.passwords import hash_password
from tests.conftest import RunningGateway, Sink, load_eml
from tests.desk_harness import PASSWORD, Client, client_as, start_server

REPORT = load_eml("report_phishing.eml")


@pytest.fixture
def desk(gateway_factory, store_url: str, smtp_sink: Sink) -> Iterator[tuple[RunningGateway, str, str]]:
    confirm = {"smarthost": smtp_sink.address, "require_authenticated": False}
    gateway = gateway_factory(store_url, confirm=confirm)
    assert gateway.send(REPORT)[0] == 250
    smtp_sink.wait_for(1)  # the confirmation: the desk's replies answer it
    case_id = gateway.store.list_cases()[0]["case_id"]
    store = build_store(gateway.service.config)
    for role in ("support", "analyst", "admin"):
        store.users.add(role, role, hash_password(PASSWORD))
    base, server, thread = start_server(gateway.service.config, store)
    yield gateway, base, case_id
    server.should_exit = True
    thread.join(timeout=10)
    store.engine.dispose()


def _mail(sink: Sink, count: int) -> EmailMessage:
    return email.message_from_bytes(sink.wait_for(count)[count - 1][2], policy=policy.default)


def _post(client: Client, case_id: str, action: str, **fields: str) -> int:
    token = client.csrf(f"/cases/{case_id}")
    return client.post(f"/cases/{case_id}/{action}", {"csrf": token, **fields}).status


def test_support_answers_the_reporter_with_a_template_without_seeing_the_report(
    desk: tuple[RunningGateway, str, str], smtp_sink: Sink
) -> None:
    gateway, base, case_id = desk
    support = client_as(base, "support")
    page = support.get(f"/cases/{case_id}").text
    assert 'action="/cases/' + case_id + '/reply"' in page
    assert "reporter@" not in page and "paypa1" not in page.lower()  # nothing of the report or its sender
    assert _post(support, case_id, "reply", template="need-more-info") == 303
    answer = _mail(smtp_sink, 2)
    assert answer["Subject"] == f"[{case_id}] We need more information about your report"
    assert answer["To"] and "reporter@example.net" in answer["To"]
    confirmation = email.message_from_bytes(smtp_sink.wait_for(1)[0][2], policy=policy.default)
    assert answer["In-Reply-To"] == confirmation["Message-ID"]
    rows = gateway.wait_outbox(lambda rows: any(r["kind"] == "reply" and r["state"] == "sent" for r in rows))
    assert any(r["kind"] == "reply" for r in rows)
    from storage.csam_views import audit_for_case

    assert any(row["actor"] == "support" for row in audit_for_case(gateway.store.engine, case_id))
    after = support.get(f"/cases/{case_id}?done=reply").text
    assert "Reply queued" in after and "reply: sent" in after


def test_analyst_writes_a_reply_and_sets_what_the_status_page_says(
    desk: tuple[RunningGateway, str, str], smtp_sink: Sink
) -> None:
    gateway, base, case_id = desk
    analyst = client_as(base, "analyst")
    text = "Subject: About the page you reported\r\n\r\nThank you, we took it down.\r\n"
    assert _post(analyst, case_id, "reply", text=text) == 303
    answer = _mail(smtp_sink, 2)
    assert answer["Subject"] == f"[{case_id}] About the page you reported"
    assert "we took it down" in answer.get_content()
    assert _post(analyst, case_id, "state", state="action-taken", notify="yes") == 303
    from storage.csam_views import audit_for_case

    assert any(row["actor"] == "analyst" for row in audit_for_case(gateway.store.engine, case_id))
    notice = _mail(smtp_sink, 3)
    assert f"[{case_id}]" in str(notice["Subject"])
    view = gateway.store.show_case(case_id)
    assert view["reporter_state"] == "action_taken"
    assert "action taken" in analyst.get(f"/cases/{case_id}").text


def test_support_may_not_set_the_state_and_admin_may_not_reply(desk: tuple[RunningGateway, str, str]) -> None:
    gateway, base, case_id = desk
    support, admin = client_as(base, "support"), client_as(base, "admin")
    assert _post(support, case_id, "state", state="closed") == 404
    assert _post(admin, case_id, "reply", template="need-more-info") == 404
    assert gateway.store.show_case(case_id).get("reporter_state") in (None, "received")


def test_a_reply_without_the_csrf_token_is_refused_and_sends_nothing(
    desk: tuple[RunningGateway, str, str],
) -> None:
    gateway, base, case_id = desk
    analyst = client_as(base, "analyst")
    answer = analyst.post(f"/cases/{case_id}/reply", {"template": "need-more-info"})
    assert answer.status == 403
    assert not any(r["kind"] == "reply" for r in gateway.store.outbox.list_outbox(case_id=case_id))


def test_an_unknown_template_or_an_empty_reply_is_refused_in_words(
    desk: tuple[RunningGateway, str, str],
) -> None:
    _gateway, base, case_id = desk
    analyst = client_as(base, "analyst")
    token = analyst.csrf(f"/cases/{case_id}")
    unknown = analyst.post(f"/cases/{case_id}/reply", {"csrf": token, "template": "../../etc/passwd"})
    assert unknown.status == 400 and "no such reply template" in unknown.text
    empty = analyst.post(f"/cases/{case_id}/reply", {"csrf": token, "text": "  "})
    assert empty.status == 400 and re.search(r"Write the reply", empty.text)
