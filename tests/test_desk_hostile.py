"""Hostile mail on the web desk (issue 20, points 6 and 7): a corpus under tests/data/hostile_web/ goes in
through real SMTP, the desk serves the store with real uvicorn, and Debian's Chromium (Playwright) opens
every page as an analyst. Nothing a sender wrote may run, load or be clicked: no dialog fires, every request
goes to the desk's own origin, no element from a message is live in the DOM, the text is shown literally,
every response carries the CSP, and evidence leaves only as a download the browser will not render.

The 10 MB text is made at run time from big_text_template.eml (a 10 MB fixture has no place in git).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.assembly import build_store
from gateway.passwords import hash_password
from storage.csam import mark
from tests.conftest import DATA, make_config, start_gateway
from tests.desk_harness import PASSWORD, Client, client_as, launch_chromium, sign_in_page, start_server

CORPUS = DATA / "hostile_web"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
COMPARTMENT = "csam_compartment.eml"  # marked CSAM: the csam role reads it behind a stated reason
BIG_LINE = f"{SCRIPT} {IMG} </style><style>body{{background:url(http://evil.example/big)}}</style>\r\n"


def corpus() -> dict[str, bytes]:
    """Each hostile message by file name; the big one filled to 10 MB of markup lines."""
    found = {p.name: p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))}
    template = found.pop("big_text_template.eml")
    filler = BIG_LINE.encode() * (10 * 1024 * 1024 // len(BIG_LINE) + 1)
    found["big_text.eml"] = template.replace(b"{filler}", filler)
    return found


@dataclass
class HostileDesk:
    base: str
    server: Any
    thread: Any
    store: Any
    raws: dict[str, bytes]
    cases: dict[str, str] = field(default_factory=dict)  # file name -> case ID

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileDesk]:
    """The corpus through the gateway's own SMTP listener into a SQLite store, then the desk on it."""
    tmp = Path(tmp_path_factory.mktemp("desk-hostile"))
    config = make_config(tmp, f"sqlite:///{tmp}/cases.db", confirm={"enabled": False})
    raws = corpus()
    gateway = start_gateway(config)
    try:
        for n, (name, raw) in enumerate(raws.items()):
            code, reply = gateway.send(raw, mail_from=f"hostile{n}@bad.example")
            assert code == 250, (name, reply)
        gateway.wait_idle(timeout=120)
    finally:
        gateway.stop()
    store = build_store(config)
    for role in ("analyst", "csam"):
        store.users.add(role, role, hash_password(PASSWORD))
    by_sha = {hashlib.sha256(raw).hexdigest(): name for name, raw in raws.items()}
    cases: dict[str, str] = {}
    for row in store.list_cases(limit=100):
        for message in store.show_case(row["case_id"])["messages"]:
            cases[by_sha[message["sha256"]]] = row["case_id"]
    assert sorted(cases) == sorted(raws), "every hostile message is a case of its own"
    mark(store.engine, cases[COMPARTMENT], "test", "confirmed in the test", timedelta(days=365))
    base, server, thread = start_server(config, store)
    running = HostileDesk(base, server, thread, store, raws, cases)
    yield running
    running.stop()
    store.engine.dispose()


# ---- the store: what came in over SMTP is kept exactly, and decoded as data, not as markup --------------


def test_every_hostile_message_is_stored_byte_for_byte(desk: HostileDesk) -> None:
    for name, case_id in desk.cases.items():
        assert desk.store.raw_message(case_id, 1) == desk.raws[name], name


def test_markup_is_kept_as_the_sender_wrote_it_in_subjects_names_and_filenames(desk: HostileDesk) -> None:
    """The store keeps the data (decoded RFC 2047 and RFC 2231 included); escaping is the display's job.
    (A From: display name is not kept at all: the desk shows the address only.)"""

    def message(name: str) -> dict[str, Any]:
        return desk.store.show_case(desk.cases[name])["messages"][0]

    script = message("script_everywhere.eml")
    assert SCRIPT in script["subject"] and script["from"] == "script-sender@bad.example"
    assert [a["filename"] for a in script["attachments"]] == [f"{SCRIPT}.txt"]
    encoded = message("rfc2047_markup.eml")
    assert encoded["subject"] == f"{SCRIPT} {IMG}"
    assert [a["filename"] for a in encoded["attachments"]] == [f"{SCRIPT}.bin"]
    assert "\u202e" in message("esc_bidi.eml")["subject"]
    big = message("big_text.eml")
    assert any(d.startswith("text_truncated") for d in big["defects"]), big["defects"]


# ---- the browser ---------------------------------------------------------------------------------------

# Every element and attribute of the DOM that could run, load or navigate, except the desk's own: its one
# stylesheet, and links and forms to its own paths.
_LIVE_JS = """
() => {
  const found = [];
  const banned = ['script', 'img', 'iframe', 'frame', 'frameset', 'object', 'embed', 'svg', 'math', 'video',
                  'audio', 'source', 'track', 'picture', 'canvas', 'base', 'style', 'template', 'applet',
                  'portal', 'marquee'];
  const urlish = ['href', 'src', 'action', 'formaction', 'srcset', 'background', 'poster', 'data',
                  'xlink:href', 'ping', 'cite', 'longdesc', 'manifest', 'codebase', 'archive'];
  for (const el of document.querySelectorAll('*')) {
    const tag = el.tagName.toLowerCase();
    const html = el.outerHTML.slice(0, 160);
    if (banned.includes(tag)) found.push('element ' + html);
    if (tag === 'link' && !(el.getAttribute('rel') === 'stylesheet'
                            && el.getAttribute('href') === '/static/desk.css')) found.push('link ' + html);
    if (tag === 'meta' && el.hasAttribute('http-equiv')) found.push('meta ' + html);
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      const value = attr.value.trim();
      if (name.startsWith('on')) found.push('handler ' + html);
      if (name === 'style') found.push('style ' + html);
      if (urlish.includes(name) && !(/^\\/(?!\\/)/.test(value) || value.startsWith('#') || value === ''
                                    || value.startsWith('?')))
        found.push(name + ' ' + value.slice(0, 120));
    }
  }
  return found;
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


class Analyst:
    """One signed-in browser context that records every request, response, dialog and console error."""

    def __init__(self, browser: Any, desk: HostileDesk, role: str = "analyst") -> None:
        self.desk = desk
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.responses: list[tuple[str, int, dict[str, str]]] = []
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("response", lambda r: self.responses.append((r.url, r.status, r.all_headers())))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.on("console", self._console)
        self.page.on("popup", lambda popup: self.dialogs.append(f"popup {popup.url}"))
        sign_in_page(self.page, desk.base, role)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.console_errors.append(message.text)

    def open(self, path: str) -> Any:
        answer = self.page.goto(self.desk.base + path)
        self.page.wait_for_load_state("load")
        return answer

    def live_elements(self) -> list[str]:
        return list(self.page.evaluate(_LIVE_JS))

    def assert_nothing_happened(self) -> None:
        assert self.dialogs == []
        foreign = [url for url in self.requests if not url.startswith(self.desk.base + "/")]
        assert foreign == [], foreign
        # A CSP violation is the browser refusing something a page tried to load or run: none may be tried.
        assert [e for e in self.console_errors if "Content Security Policy" in e] == []
        for url, status, headers in self.responses:
            policy = headers.get("content-security-policy", "")
            assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, (url, status)
            assert "unsafe-inline" not in policy and "script-src" not in policy, policy
            assert headers.get("x-content-type-options") == "nosniff", url
            kind = headers.get("content-type", "")
            if kind.startswith("text/html"):  # no charset left for a browser to guess (UTF-7 and the like)
                assert "charset=utf-8" in kind.replace(" ", "").lower(), (url, kind)

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def signed_in(browser: Any, desk: HostileDesk) -> Iterator[Analyst]:
    """One login for the module (argon2 makes each a second): the tests only read."""
    session = Analyst(browser, desk)
    yield session
    session.close()


@pytest.fixture
def analyst(signed_in: Analyst) -> Analyst:
    """The signed-in analyst with a clean record of requests, responses, dialogs and console errors."""
    for record in (signed_in.requests, signed_in.responses, signed_in.dialogs, signed_in.console_errors):
        record.clear()
    return signed_in


def test_the_control_page_of_the_desk_itself_has_nothing_live(analyst: Analyst) -> None:
    """The DOM check's baseline: the login and queue markup of the desk pass it (else it proves nothing)."""
    analyst.open("/search?q=nothing-matches-this")
    assert analyst.live_elements() == []
    assert analyst.page.locator("main").count() == 1
    analyst.assert_nothing_happened()


def test_the_queue_shows_every_hostile_subject_as_text(analyst: Analyst, desk: HostileDesk) -> None:
    analyst.open("/")
    assert analyst.live_elements() == []
    text = analyst.page.inner_text("main")
    assert SCRIPT in text and IMG in text
    assert "</style><style>body{background:url(hxxp://evil[.]example/x)}</style>" in text
    assert "<U+202E>" in text and "\u202e" not in analyst.page.content()
    for name, case_id in desk.cases.items():
        assert case_id in text or name == COMPARTMENT
    analyst.assert_nothing_happened()


@pytest.mark.parametrize("query", ["script", "alert", "evil.example", "onerror", "style"])
def test_search_results_for_hostile_words_are_inert(analyst: Analyst, query: str) -> None:
    analyst.open(f"/search?q={query}")
    assert analyst.live_elements() == []
    analyst.assert_nothing_happened()


REFLECTED = [SCRIPT, IMG, "javascript:alert(1)", "</style><style>*{display:none}</style>", "\u202e\x1b[2J"]


@pytest.mark.parametrize("hostile", REFLECTED)
def test_what_a_url_carries_comes_back_as_text_if_at_all(
    analyst: Analyst, desk: HostileDesk, hostile: str
) -> None:
    """The desk's own parameters are input too: search, every queue filter and cursor, `done`, a case ID."""
    from urllib.parse import quote, urlencode

    case_id = desk.cases["script_everywhere.eml"]
    filters = {k: hostile for k in ("status", "kind", "flag", "assignee", "from", "to", "before")}
    for path in (
        "/search?" + urlencode({"q": hostile}),
        "/?" + urlencode(filters),
        f"/cases/{case_id}?" + urlencode({"done": hostile}),
        "/cases/" + quote(hostile, safe=""),
    ):
        analyst.open(path)
        assert analyst.live_elements() == [], path
        html = analyst.page.content()
        assert "\x1b" not in html and "\u202e" not in html, path
        # Still one page: nothing closed the title, the main element or the document early.
        assert analyst.page.evaluate("document.querySelectorAll('title, main, body').length") == 3, path
    analyst.assert_nothing_happened()


def test_a_note_written_with_markup_is_shown_as_text(analyst: Analyst, desk: HostileDesk) -> None:
    analyst.open(f"/cases/{desk.cases['css_injection.eml']}")
    analyst.page.fill("textarea[name=body]", f"{SCRIPT}\n{IMG}")
    with analyst.page.expect_navigation():
        analyst.page.click("form[action$='/note'] button")
    assert "Note added." in analyst.page.inner_text("main")
    assert SCRIPT in analyst.page.inner_text("div.note")
    assert analyst.live_elements() == []
    analyst.assert_nothing_happened()


def test_a_failed_login_with_a_hostile_user_name_is_inert(browser: Any, desk: HostileDesk) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(desk.base + "/login")
        page.fill("input[name=username]", IMG)
        page.fill("input[name=password]", SCRIPT)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "Wrong user name or password." in page.inner_text("main")
        assert page.evaluate(_LIVE_JS) == [] and dialogs == []
    finally:
        context.close()


CASE_TEXT: dict[str, list[str]] = {
    "script_everywhere.eml": [SCRIPT, f"{SCRIPT}.txt", "<SCRIPT SRC=//evil[.]example/x.js></SCRIPT>"],
    "attribute_breakout.eml": [IMG, "' onmouseover='alert(1)' x='", "</textarea></pre><img"],
    "html_part_links.eml": ["verify your account", "lure.html"],
    "svg_attachment.eml": ["scan.svg", "image/svg+xml"],
    "css_injection.eml": ["</style><style>body{background:url(hxxp://evil[.]example/x)}</style>"],
    "rfc2047_markup.eml": [f"{SCRIPT} {IMG}", f"{SCRIPT}.bin"],
    "esc_bidi.eml": ["<U+202E>", "\\x1b[2J", "invoice<U+202E>fdp.exe"],
    "big_text.eml": [SCRIPT, "Showing the first"],
    "utf7_charset.eml": [SCRIPT, "+ADw-script+AD4-"],  # the subject decoded from UTF-7, the body not
}


@pytest.mark.parametrize("name", sorted(CASE_TEXT))
def test_each_hostile_case_page_is_inert_and_shows_the_markup_as_text(
    analyst: Analyst, desk: HostileDesk, name: str
) -> None:
    answer = analyst.open(f"/cases/{desk.cases[name]}")
    assert answer.status == 200
    assert analyst.live_elements() == []
    text = analyst.page.inner_text("main")
    for literal in CASE_TEXT[name]:
        assert literal in text, literal
    html = analyst.page.content()
    assert "\x1b" not in html and "\u202e" not in html and "\u200b" not in html
    analyst.assert_nothing_happened()


def test_javascript_and_data_links_of_an_html_part_are_never_links(
    analyst: Analyst, desk: HostileDesk
) -> None:
    analyst.open(f"/cases/{desk.cases['html_part_links.eml']}")
    hrefs = analyst.page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    assert hrefs and all(h.startswith(desk.base + "/") for h in hrefs), hrefs
    for selector in ("form[action^='http']", "[formaction]", "[src]", "[srcset]", "[background]", "[poster]"):
        assert analyst.page.locator(selector).count() == 0, selector
    analyst.assert_nothing_happened()


def test_the_ten_megabyte_text_is_shown_by_its_start_and_the_page_stays_small(
    analyst: Analyst, desk: HostileDesk
) -> None:
    analyst.open(f"/cases/{desk.cases['big_text.eml']}")
    html = analyst.page.content()
    assert len(html) < 3 * 1024 * 1024, len(html)  # a 10 MB paste is not a 10 MB page
    assert analyst.live_elements() == []
    analyst.assert_nothing_happened()


def test_clicking_an_svg_attachment_downloads_it_and_renders_nothing(
    analyst: Analyst, desk: HostileDesk
) -> None:
    analyst.open(f"/cases/{desk.cases['svg_attachment.eml']}")
    with analyst.page.expect_download() as started:
        analyst.page.click("table.attachments a[download]")
    download = started.value
    assert re.fullmatch(r"[A-Za-z0-9._-]+", download.suggested_filename), download.suggested_filename
    assert b"<script>" in Path(download.path()).read_bytes()  # the bytes, unchanged, to a file
    assert analyst.page.url == f"{desk.base}/cases/{desk.cases['svg_attachment.eml']}"
    assert analyst.live_elements() == []
    analyst.assert_nothing_happened()


# ---- downloads over plain HTTP: the headers that keep a browser from rendering evidence -----------------


def _attachment_urls(desk: HostileDesk, client: Client) -> list[str]:
    urls = []
    for name, case_id in desk.cases.items():
        if name == COMPARTMENT:
            facts = client.get(f"/cases/{case_id}").text  # an analyst sees a CSAM case's bare facts only
            assert "compartment case" not in facts and "/raw" not in facts and "/attachments/" not in facts
            continue
        page = client.get(f"/cases/{case_id}").text
        urls += re.findall(r'href="(/cases/[^"]+/(?:raw|attachments/\d+))"', page)
    return urls


def test_every_download_is_an_attachment_octet_stream_with_nosniff_and_a_plain_name(
    desk: HostileDesk,
) -> None:
    client = client_as(desk.base, "analyst")
    urls = _attachment_urls(desk, client)
    assert len([u for u in urls if "/attachments/" in u]) >= 7
    assert len([u for u in urls if u.endswith("/raw")]) == len(desk.cases) - 1
    for url in urls:
        answer = client.get(url)
        assert answer.status == 200, url
        headers = answer.headers
        disposition = headers["content-disposition"]
        assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+"', disposition), disposition
        assert headers["content-type"] == "application/octet-stream", url
        assert headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store"


def test_a_reason_typed_with_markup_opens_the_compartment_inert_and_travels_to_downloads_as_typed(
    browser: Any, desk: HostileDesk
) -> None:
    """The csam role states a reason before a CSAM case's content: the reason is shown back, and carried
    in each download form, as text."""
    session = Analyst(browser, desk, "csam")
    try:
        case_id = desk.cases[COMPARTMENT]
        session.open(f"/cases/{case_id}")
        assert "compartment case" not in session.page.content()
        reason = f"{IMG} {SCRIPT} \u202e"
        session.page.fill("form[action$='/view'] input[name=reason]", reason)
        with session.page.expect_navigation():
            session.page.click("form[action$='/view'] button")
        text = session.page.inner_text("main")
        assert f"{SCRIPT} compartment case" in text and IMG in text
        assert session.live_elements() == []
        carried = session.page.eval_on_selector_all(
            "form input[name=reason][type=hidden]", "inputs => inputs.map(i => i.value)"
        )
        assert carried and all(value == f"{IMG} {SCRIPT} <U+202E>" for value in carried), carried
        with session.page.expect_download() as started:
            session.page.click(f"form[action='/cases/{case_id}/messages/1/attachments/1'] button")
        assert re.fullmatch(r"[A-Za-z0-9._-]+", started.value.suggested_filename)
        assert session.live_elements() == []
        session.assert_nothing_happened()
    finally:
        session.close()
