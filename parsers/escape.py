"""Defang URL-like text for display.

We never reject a report for its links; instead everything shown to a person has its URLs, hosts, IPs and
addresses made non-clickable (`hxxps://bad[.]example`). Text that is not URL-like is left byte for byte as
written (credentials lines, times, versions, Windows paths), because the desk reads
reporters' words as evidence.

Decisions pinned by tests:
- A bare name counts as a host when it ends in a Public Suffix List suffix (bundled snapshot, no fetch) or an
  RFC 6761 special-use name (`.example`, `.test`, ...), or starts with `www.`. So `invoice.pdf`, `file.txt`,
  `node.js`, `e.g.` stay, while `report.zip`, `movie.mov`, `readme.md` are escaped: those are real TLDs and
  the desk prefers an over-escaped filename to a live link.
- Markers split by whitespace (`bad [.] example`) are not joined: we scan whitespace-free chunks only.
- Hosts inside a URL's path or query are escaped too (they are often redirect targets).
"""

from __future__ import annotations

from parsers import urlscan


def escape_text(text: str) -> str:
    """Defang every URL, host, IP and e-mail address in `text`; idempotent, linear time."""
    out: list[str] = []
    prev = 0
    for m in urlscan.candidate_chunks(text):
        escaped = escape_chunk(m.group())
        if escaped is not None:
            out.append(text[prev : m.start()])
            out.append(escaped)
            prev = m.end()
    if not out:
        return text
    out.append(text[prev:])
    return "".join(out)


def refang(text: str) -> str:
    """Turn defanged text back into live form: for machines (indicator storage, lookups), never display."""
    return urlscan.refang(text)


def escape_chunk(chunk: str) -> str | None:
    """One chunk from `urlscan.candidate_chunks` escaped, or None when nothing in it is URL-like.

    Escapes are written from the scan of the refanged form: an already-defanged chunk then escapes to the
    same output as its live form, which is what makes escape_text idempotent.
    """
    scanned = urlscan.scan_chunk(chunk)
    if not scanned.edits:
        return None
    pos = scanned.pos
    out: list[str] = []
    prev = 0
    for start, end, rep in scanned.edits:
        out.append(chunk[_orig(pos, prev) : _orig(pos, start)])  # text between detections, as written
        out.append(rep)
        prev = end
    out.append(chunk[_orig(pos, prev) :])
    return "".join(out)


def _orig(pos: tuple[int, ...] | None, i: int) -> int:
    return i if pos is None else pos[i]
