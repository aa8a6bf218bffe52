"""Terminal-safe display of anything a sender wrote.

A terminal obeys the bytes it is given: ESC/CSI repaints the screen (`ESC[2J` can draw a fake case view over
the real flags), OSC 8 makes hyperlinks, OSC 52 writes the analyst's clipboard, OSC 0 sets the window title,
C1 controls (U+0080-U+009F) are CSI/OSC on many terminals, and bidi overrides or zero-width characters make
text read differently from what it is. So every string shown to a person is defanged (`parsers.escape`) and
then has those characters replaced by visible escapes: `\\x1b` for C0/DEL/C1, `<U+202E>` for the invisible
Unicode ones. The replacement is ASCII and contains none of the escaped characters, so escaping escaped text
changes nothing.

Homoglyph host names (`pаypal[.]com` with a Cyrillic `а`) are shown with their punycode beside them, which
is what a registrar or a DNS lookup will see.
"""

from __future__ import annotations

import re

from parsers.escape import escape_text

# Unicode characters that are invisible or reorder text (UTS #39 / Trojan Source, CVE-2021-42574), plus
# U+2028/2029 which some readers treat as line breaks, tag characters (U+E0000 block, "ASCII smuggling")
# and lone surrogates (from undecodable bytes), which a terminal cannot show faithfully.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e0fff"
)
# C0 (RFC 20) without TAB, DEL, and C1 (ISO 6429): the bytes terminals act on.
_CONTROLS = "\x00-\x08\x0a-\x1f\x7f-\x9f"
_UNSAFE_LINE = re.compile(f"[{_CONTROLS}{_INVISIBLE}]")
# Multi-line text (message bodies) keeps its line feeds; a CR is still shown, so `\r` cannot overwrite a line.
_UNSAFE_BLOCK = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]")

# A defanged or plain host name with at least one non-ASCII label (labels joined by `.` or `[.]`).
_HOST = re.compile(r"[\w\-]+(?:(?:\[\.\]|\.)[\w\-]+)+")


def _visible(m: re.Match[str]) -> str:
    cp = ord(m.group())
    return f"\\x{cp:02x}" if cp < 0xA0 else f"<U+{cp:04X}>"


def terminal_safe(text: str, multiline: bool = False) -> str:
    """`text` with every control, bidi and invisible character shown as a visible escape, nothing else.

    Single-line fields (subjects, addresses, filenames) also show LF, so a subject cannot add a fake line.
    """
    pattern = _UNSAFE_BLOCK if multiline else _UNSAFE_LINE
    return pattern.sub(_visible, text) if pattern.search(text) else text


def _punycode_label(label: str) -> str:
    if label.isascii():
        return label.lower()
    try:
        return "xn--" + label.lower().encode("punycode").decode("ascii")
    except UnicodeError:
        return label


def _with_punycode(m: re.Match[str]) -> str:
    host = m.group()
    if host.isascii() or not any(not c.isascii() and c.isalpha() for c in host):
        return host
    sep = "[.]" if "[.]" in host else "."
    labels = re.split(r"\[\.\]|\.", host)
    return f"{host} ({sep.join(_punycode_label(label) for label in labels)})"


def show_idn(text: str) -> str:
    """Host names with non-ASCII letters followed by their punycode: `pаypal[.]com (xn--pypal-4ve[.]com)`."""
    return text if text.isascii() else _HOST.sub(_with_punycode, text)


def for_display(text: str, multiline: bool = False) -> str:
    """The one rendering of sender-controlled text for a person: defanged, IDNs beside their punycode, and no
    byte a terminal would act on."""
    return terminal_safe(show_idn(escape_text(text)), multiline)


# JSON keeps its own escapes (`\\u202e`): json.dumps always escapes C0, but with ensure_ascii=False leaves
# DEL, C1, bidi and invisible characters raw, and a terminal would act on them. ensure_ascii=True would also
# do, but it makes every non-Latin report unreadable; escaping only these keeps JSON valid and round-trips.
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f{_INVISIBLE}]")


def json_safe(dumped: str) -> str:
    """JSON text (from json.dumps) with the characters a terminal acts on written as `\\uXXXX` escapes."""
    if not _JSON_UNSAFE.search(dumped):
        return dumped

    def esc(m: re.Match[str]) -> str:
        cp = ord(m.group())
        if cp > 0xFFFF:  # JSON escapes astral characters as a UTF-16 surrogate pair (RFC 8259 §7)
            cp -= 0x10000
            return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"
        return f"\\u{cp:04x}"

    return _JSON_UNSAFE.sub(esc, dumped)
