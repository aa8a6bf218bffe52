"""The desk in a real browser (issue 20): Debian's Chromium driven by Playwright, one browser per module.

Each role logs in through the form and sees what it may; support's content URLs are the one 404; a form
posted without its token is refused; the session cookie carries its flags; no request leaves for another
origin and no dialog fires on a hostile case. Screenshots of the queue and a case page go to
/tmp/desk-*.png for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.assembly import build_store
from tests.desk_harness import (
    CHROMIUM,
    Desk,
    filled_store,
    launch_chromium,
    sign_in_page,
    start_server,
)

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    tmp = tmp_path_factory.mktemp("desk-browser")
    config, cases = filled_store(Path(tmp))
    store = build_store(config)
    base, server, thread = start_server(config, store)
    running = Desk(base, server, thread, cases, store)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


class Session:
    """One browser context signed in as one role, recording every request and dialog."""

    def __init__(self, browser: Any, desk: Desk, role: str) -> None:
        self.desk = desk
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        sign_in_page(self.page, desk.base, role)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.desk.base + path)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def as_role(browser: Any, desk: Desk) -> Iterator[Any]:
    opened: list[Session] = []

    def login(role: str) -> Session:
        session = Session(browser, desk, role)
        opened.append(session)
        return session

    yield login
    for session in opened:
        session.close()


def test_each_role_lands_where_it_should_after_logging_in(as_role: Any, desk: Desk) -> None:
    for role, expected in (
        ("support", "Find a case by its ID"),
        ("admin", "Find a case by its ID"),
        ("analyst", "Queue"),
        ("csam", "Queue"),
    ):
        session = as_role(role)
        assert expected in session.page.inner_text("main"), role
        assert f"{role} ({role})" in session.page.inner_text("header")


def test_session_cookie_is_httponly_and_samesite_strict_in_the_browser(as_role: Any) -> None:
    session = as_role("analyst")
    cookie = next(c for c in session.context.cookies() if c["name"] == "desk_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http on loopback: auto means not Secure


def test_support_looks_up_a_spoken_case_id_and_sees_no_content(as_role: Any, desk: Desk) -> None:
    session = as_role("support")
    case_id = desk.cases["plain"]
    session.page.fill("main input[name=q]", case_id.lower().replace("-", " "))
    session.page.click("main button[type=submit]")
    session.page.wait_for_url(f"{desk.base}/cases/{case_id}")
    text = session.page.inner_text("main")
    assert case_id in text and "open" in text
    for content in ("SSH", "alice", "203.0.113"):
        assert content not in session.page.content()
    session.page.screenshot(path="/tmp/desk-support-case.png", full_page=True)


def test_support_gets_404_for_every_content_url(as_role: Any, desk: Desk) -> None:
    session = as_role("support")
    unknown = session.goto("/cases/ABU-0000-0000")
    assert unknown.status == 404
    body = session.page.content()
    pdf = desk.cases["pdf"]
    for path in (
        f"/cases/{pdf}/messages/1/raw",
        f"/cases/{pdf}/messages/1/attachments/1",
        "/admin",
        "/?flag=csam",
    ):
        answer = session.goto(path)
        if path == "/?flag=csam":  # the queue URL: support gets the lookup form, never the list
            assert "evidence" not in session.page.content()
            continue
        assert answer.status == 404, path
        assert session.page.content() == body


def test_a_form_posted_without_its_token_is_refused(as_role: Any, desk: Desk) -> None:
    session = as_role("analyst")
    case_id = desk.cases["plain"]
    session.goto(f"/cases/{case_id}")
    session.page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.value = 'forged')")
    with session.page.expect_navigation():
        session.page.click("form[action$='/hold'] button")
    assert "Refused" in session.page.inner_text("main")
    assert not desk.store.show_case(case_id)["hold"]


def test_hostile_case_renders_inert_fires_no_dialog_and_loads_nothing_from_elsewhere(
    as_role: Any, desk: Desk
) -> None:
    session = as_role("analyst")
    session.goto(f"/cases/{desk.cases['hostile']}")
    session.page.wait_for_load_state("networkidle")
    assert session.dialogs == []
    assert session.page.locator("main script, main img, main iframe").count() == 0
    assert "<script>alert(3)</script>" in session.page.inner_text("pre.text")
    assert session.page.locator("a[href*='phish']").count() == 0
    copy = session.page.locator("input.copy").first
    assert copy.get_attribute("readonly") is not None
    assert all(url.startswith(desk.base) for url in session.requests), session.requests
    session.page.screenshot(path="/tmp/desk-case-hostile.png", full_page=True)


def test_csam_role_states_a_reason_before_the_content_appears(as_role: Any, desk: Desk) -> None:
    session = as_role("csam")
    case_id = desk.cases["csam"]
    session.goto(f"/cases/{case_id}")
    assert "compartment test" not in session.page.content()
    session.page.screenshot(path="/tmp/desk-csam-reason.png", full_page=True)
    session.page.fill("form[action$='/view'] input[name=reason]", "hotline report 7")
    with session.page.expect_navigation():
        session.page.click("form[action$='/view'] button")
    assert "compartment test" in session.page.content()
    assert "hotline report 7" in session.page.inner_text("main")


def test_analyst_works_a_case_through_the_forms(as_role: Any, desk: Desk) -> None:
    session = as_role("analyst")
    case_id = desk.cases["pdf"]
    session.goto(f"/cases/{case_id}")
    session.page.fill("textarea[name=body]", "called the customer")
    with session.page.expect_navigation():
        session.page.click("form[action$='/note'] button")
    assert "Note added." in session.page.inner_text("main")
    assert "called the customer" in session.page.inner_text("main")


def test_screenshots_of_the_queue_and_a_case_page(as_role: Any, desk: Desk) -> None:
    session = as_role("analyst")
    session.goto("/")
    session.page.screenshot(path="/tmp/desk-queue.png", full_page=True)
    session.goto(f"/cases/{desk.cases['pdf']}")
    session.page.screenshot(path="/tmp/desk-case.png", full_page=True)
    assert Path("/tmp/desk-queue.png").stat().st_size > 0
    assert all(url.startswith(desk.base) for url in session.requests)
