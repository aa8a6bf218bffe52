"""HTML body to readable text with link targets shown, by the stdlib parser kept linear.

CPython 3.11's `html.parser` raises AssertionError on unknown `<![...` marked sections and rescans to the
end of input for every unterminated construct; both are defused here.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from parsers.headers import clean

# html.parser is pure Python (~1 s per 10 MB) and has super-linear paths on malformed markup.
# html.parser is pure Python (~1 s per 10 MB) and has super-linear paths on malformed markup.
_MAX_HTML_CHARS = 1024 * 1024
_MAX_MARKED_SECTIONS = 500  # Outlook's conditional comments number in the dozens
_SPACE_RE = re.compile(r"\s+")
_BLANK_LINES_RE = re.compile(r"\n{3,}")


_BLOCK_TAGS = frozenset(
    "address article aside blockquote br center dd div dl dt fieldset figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody thead tfoot tr ul".split()
)
_CELL_TAGS = frozenset({"td", "th"})
_SKIP_TAGS = frozenset({"script", "style"})
_LINK_TAGS = frozenset({"a", "area"})


class _HtmlToText(HTMLParser):
    """Readable text from an HTML body, with each link's target written beside its anchor text.

    Phishing reports are mostly about where a link really goes, so the target is shown, not hidden.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[str] = []
        self._skip = 0
        self._pre = 0
        self._anchor: tuple[str, int] | None = None  # (href, index in out where the anchor text starts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
        elif tag in _CELL_TAGS:
            self.out.append(" ")
        if tag == "pre":
            self._pre += 1
        if tag in _LINK_TAGS:
            href = next((value.strip() for key, value in attrs if key == "href" and value), "")
            if href:
                self.links.append(href)
            if tag == "a":
                self._close_anchor()
                self._anchor = (href, len(self.out)) if href else None

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag == "a":
            self._close_anchor()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data if self._pre else _SPACE_RE.sub(" ", data))

    def close(self) -> None:
        super().close()
        self._close_anchor()

    def parse_marked_section(self, i: int, report: int = 1) -> int:
        """CPython raises AssertionError on unknown `<![keyword`; skip it like a bogus comment instead."""
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            return self.parse_bogus_comment(i)

    def _close_anchor(self) -> None:
        if self._anchor is None:
            return
        href, start = self._anchor
        self._anchor = None
        if "".join(self.out[start:]).strip() != href:
            self.out.append(f" ({href})")


def html_to_text(html: str, defects: list[str]) -> tuple[str, tuple[str, ...]]:
    """(text, hrefs) via the stdlib parser; a parser failure keeps what was converted so far."""
    if len(html) > _MAX_HTML_CHARS:
        defects.append(f"too_complex: HTML body over {_MAX_HTML_CHARS} chars")
        html = html[:_MAX_HTML_CHARS]
    parser = _HtmlToText()
    try:
        parser.feed(_defuse_unterminated(html))
        parser.close()
    except Exception as exc:
        defects.append(f"parse_error: {type(exc).__name__}")
    return _tidy("".join(parser.out)), tuple(clean(link) for link in parser.links)


def _defuse_unterminated(html: str) -> str:
    """Escape `<` that can never be closed, so html.parser stays linear.

    At close(), CPython 3.11's parser rescans to the end of the input for every unterminated construct
    (quadratic: 2 MB of `<!-- x` runs for minutes). A construct is hopeless when no terminator follows
    it: `>` for tags and declarations, `-->` for comments, `]>` for marked sections. Escaping those keeps
    the output (the parser would emit them as text anyway) and bounds the cost.
    """
    last_gt = html.rfind(">")
    if "<" in html[last_gt + 1 :]:
        html = html[: last_gt + 1] + html[last_gt + 1 :].replace("<", "&lt;")
    comment_end = max(html.rfind("-->"), html.rfind("--!>"))
    if "<!--" in html[comment_end + 1 :]:
        html = html[: comment_end + 1] + html[comment_end + 1 :].replace("<!--", "&lt;!--")
    section_end = html.rfind("]>")
    if html.count("<![") > _MAX_MARKED_SECTIONS:
        section_end = -1
    if "<![" in html[section_end + 1 :]:
        html = html[: section_end + 1] + html[section_end + 1 :].replace("<![", "&lt;![")
    return html


def _tidy(text: str) -> str:
    """Trim each line and keep at most one blank line between paragraphs."""
    lines = (line.strip() for line in text.split("\n"))
    return clean(_BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip())
