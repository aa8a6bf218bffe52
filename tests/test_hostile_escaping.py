"""Issue 15 point 3: everything shown is escaped, and what a browser reads as a link never survives escaping.

The judge of "live" is a real WHATWG URL parser (Node's `new URL()`, what browsers implement), not our own
scanner: for every escaped output it is run over every whitespace-separated token and every suffix of a token
that starts at a scheme-like position (a letter after a non-scheme character), which is every place a
browser's or a terminal's link detection could start a URL. Nothing may parse with a host, nor as a
`javascript:`/`data:` URL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from parsers.defang import defang
from parsers.escape import escape_text
from parsers.indicators import extract_indicators
from tests.conftest import RunningGateway
from tests.test_hostile_terminal import cli_config_for, run_on_pipe, run_on_pty

NODE = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)

_LIVE_JS = r"""
const texts = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const live = [];
for (const text of texts) {
  for (const token of text.split(/\s+/)) {
    for (let i = 0; i < token.length; i++) {
      if (!/[A-Za-z]/.test(token[i]) || (i > 0 && /[A-Za-z0-9+.\-]/.test(token[i - 1]))) continue;
      let u;
      try { u = new URL(token.slice(i)); } catch (e) { continue; }
      if (u.host !== '' || u.protocol === 'javascript:' || u.protocol === 'data:')
        live.push([text, token.slice(i), u.href]);
    }
  }
}
process.stdout.write(JSON.stringify(live));
"""


def whatwg_live(texts: list[str]) -> list[list[str]]:
    """Every (text, substring, href) the WHATWG parser accepts as a URL with a host, or a script/data URL."""
    if NODE is None:
        pytest.skip("node (WHATWG URL parser) not installed")
    done = subprocess.run(
        [NODE, "-e", _LIVE_JS],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


# Each input is live for a browser; the indicator is what the browser would visit.
BYPASSES: list[tuple[str, tuple[str, str]]] = [
    ("http:/3232235777/login", ("url", "http://192.168.1.1/login")),
    ("http:/3232235777/login", ("ipv4", "192.168.1.1")),
    ("http:\\\\evil.example/x", ("url", "http://evil.example/x")),
    ("http:\\\\evil.example/x", ("domain", "evil.example")),
    ("https:/\\evil%2Eexample", ("domain", "evil.example")),
    ("https:evil%2Eexample", ("url", "https://evil.example")),
    ("https:evil%2Eexample/path", ("domain", "evil.example")),
    ("http://evil\uff0eexample/a", ("domain", "evil.example")),
    ("http://evil\u3002example/a", ("url", "http://evil.example/a")),
    ("visit evil\u3002example today", ("domain", "evil.example")),
    ("http://ev\u200bil.example/", ("domain", "evil.example")),
    ("http://ev\u2060il\ufeff.example/", ("domain", "evil.example")),
    ("http://e\u00advil.example/", ("domain", "evil.example")),
    ("javascript:alert(document.cookie)", ("url", "javascript:alert(document.cookie)")),
    ("data:text/html;base64,PHNjcmlwdD4=", ("url", "data:text/html;base64,PHNjcmlwdD4=")),
    ("http://0xC0.0250.1.1/admin", ("ipv4", "192.168.1.1")),
    ("http://0300.0250.0001.0001/", ("url", "http://192.168.1.1/")),
    ("http://0xc0a80101/", ("ipv4", "192.168.1.1")),
    ("http://192.168.257/", ("ipv4", "192.168.1.1")),
    ("https:///\\\\evil.example", ("domain", "evil.example")),
    ('"https://evil.example/login"@victim.example', ("url", "https://evil.example/login")),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "indicator"), BYPASSES)
def test_defang_bypass_is_not_live_for_a_whatwg_parser_and_becomes_an_indicator(
    raw: str, indicator: tuple[str, str]
) -> None:
    if ":" in raw:  # free text (`evil\u3002example`) has no scheme; a mail client's linkifier adds one
        assert whatwg_live([raw]), f"{raw!r} is not live for WHATWG: the case is wrong"
    escaped = escape_text(raw)
    assert whatwg_live([escaped]) == []
    assert escape_text(escaped) == escaped  # idempotent
    found = {(i.kind, i.value) for i in extract_indicators(raw)}
    assert indicator in found
    assert indicator in {(i.kind, i.value) for i in extract_indicators(escaped)}  # escaped text keeps it
    assert defang(raw).escaped == escaped and set(defang(raw).indicators) == set(extract_indicators(raw))


@pytest.mark.parametrize(
    "prose",
    [
        "Username: bob",
        "Password: x:y",
        "10:30",
        "at 10:30:15 UTC",
        "Note:see below",
        "ratio 3:2",
        "http: the protocol",
    ],
)
def test_words_with_colons_stay_as_written(prose: str) -> None:
    assert escape_text(prose) == prose
    assert extract_indicators(prose) == []


def test_every_displayed_field_is_escaped_over_smtp_and_the_cli(
    gateway_factory: Callable[..., RunningGateway], store_url: str, tmp_path: Path
) -> None:
    """Envelope sender with a URL as its local part, a hostile Message-ID, an X-ARF report whose category
    and field keys are URLs: `cases list` and `cases show` show none of them live (checked by WHATWG)."""
    gateway = gateway_factory(store_url, confirm={"enabled": False})
    report = json.dumps(
        {
            "xarf_version": "4.0.0",
            "report_id": "00000000-0000-4000-8000-000000009999",
            "timestamp": "2024-05-16T08:30:00Z",
            "reporter": {"org": "x", "contact": "reports@hotline.example", "domain": "hotline.example"},
            "sender": {"org": "x", "contact": "reports@hotline.example", "domain": "hotline.example"},
            "source_identifier": "http:/3232235777/login",
            "category": "https://category.evil.example/c",
            "type": "phishing",
            "https://key.evil.example/k": "https:evil%2Eexample",
            "url": "http:\\\\field.evil.example/x",
        }
    )
    raw = (
        'From: "https://evil.example/login"@victim.example\r\nTo: abuse@example.org\r\nSubject: Phishing\r\n'
        "Message-ID: <https://mid.evil.example/x@mid.evil.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b3"\r\n\r\n--b3\r\nContent-Type: text/plain\r\n\r\n'
        'See attachment.\r\n\r\n--b3\r\nContent-Type: application/json; name="xarf.json"\r\n'
        'Content-Disposition: attachment; filename="xarf.json"\r\n\r\n'
        f"{report}\r\n\r\n--b3--\r\n"
    ).encode()
    sender = '"https://evil.example/login"@victim.example'
    code, reply = gateway.send(raw, mail_from=sender)
    assert code == 250, reply
    gateway.wait_idle()
    config = cli_config_for(tmp_path, store_url)
    [row] = gateway.store.list_cases()
    case_id = row["case_id"]
    view = json.loads(run_on_pipe(config, "cases", "show", case_id, "--json")[1])
    message = view["messages"][0]
    assert message["sender"] == sender  # what is kept is not escaped
    code, listed = run_on_pty(config, "cases", "list")
    assert code == 0
    code, shown = run_on_pty(config, "cases", "show", case_id)
    assert code == 0
    texts = [listed.decode(), shown.decode(), run_on_pipe(config, "cases", "list")[1].decode()]
    assert whatwg_live(texts) == []
    assert "hxxps://evil[.]example/login" in texts[0]
    show = texts[1]
    assert "hxxps://category[.]evil[.]example/c" in show  # machine-report category
    assert "hxxps://key[.]evil[.]example/k" in show  # field key
    assert "mid[.]evil[.]example" in show  # Message-ID
    indicators = {(i["kind"], i["value"]) for i in view["indicators"]}
    assert ("url", "http://field.evil.example/x") in indicators  # the `http:\\\\` report field, as visited
