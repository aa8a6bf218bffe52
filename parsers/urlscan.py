"""The one scanner behind escaping and indicator extraction.

Both `escape_text` and `extract_indicators` must agree on what is URL-like: the escaped text has to yield
every indicator the original did, and escaping twice must change nothing. So there is one scanner, and it
always runs on the *refanged* form of a whitespace-free chunk. Escaped output refangs back to that same form,
which is what makes both properties hold by construction rather than by a pile of special cases.

Every regex here is either possessive, bounded, or guarded by a lookbehind that stops it restarting inside a
run, so a chunk of any shape is scanned in linear time (the desk gets megabyte-long lines of junk).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import tldextract

FoundKind = Literal["url", "domain", "ipv4", "ipv6", "email"]

# RFC 2606 / RFC 6761 special-use names. The Public Suffix List leaves them out on purpose, but reports and
# our own docs use `.example`/`.test` for real-looking hosts, and a host there must not stay live either.
SPECIAL_USE_SUFFIXES: tuple[str, ...] = (
    "example", "test", "invalid", "localhost", "local", "internal", "home.arpa",
)  # fmt: skip

# Characters a hostname label may be made of. `\w` covers letters, digits and `_` in every script; the ranges
# add the combining marks that Indic, Thai, Hebrew and Arabic IDN labels need (they are not `\w` in Python).
_L = (
    r"\w\u00ad\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u0610-\u061a\u064b-\u065f"
    r"\u0900-\u0dff\u0e00-\u0eff\u200c\u200d\-"
)

# A run of labels joined by single dots. The lookbehind keeps finditer from restarting inside a label (which
# is what makes naive host regexes quadratic); possessive quantifiers rule out backtracking altogether.
_HOST_RUN = re.compile(rf"(?<![{_L}])[{_L}]++(?:\.[{_L}]++)++")
# A URL's host may be a single label (`http://localhost/`).
_URL_HOST = re.compile(rf"[{_L}]++(?:\.[{_L}]++)*+")
# IPv6 candidates: bounded groups, so each start position costs a constant. `ipaddress` validates them.
_V6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:])"
)
# Where a URL cannot continue: characters RFC 3986 never allows unescaped and mail text uses as delimiters.
# Control characters end a URL too: an ESC in `https://a.example/x\x1b]8;;` is terminal markup, not path.
_URL_STOP = re.compile(r"[<>\"'`{}|\\^\x00-\x1f\x7f-\x9f]")
_AUTH_END = re.compile(r"[/?#<>\"'`{}|\\^\x00-\x1f\x7f-\x9f]")
# WHATWG "special" schemes whose host is found whatever slashes follow the colon (file: is special too, but
# `file:host` is a path, so it only counts with `://`).
_SPECIAL = re.compile(r"(?<![A-Za-z0-9+.\-])(?:https?|ftp|wss?):", re.IGNORECASE)
# Schemes with no host that still run or render something when clicked.
_SCRIPT = re.compile(r"(?<![A-Za-z0-9+.\-])(?:data|javascript|vbscript):(?=[^\s:])", re.IGNORECASE)
_SCHEME_COLON = re.compile(r"(?:https?|ftp|wss?|data|javascript|vbscript):", re.IGNORECASE)
_PORT = re.compile(r":\d{1,5}(?!\d)")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-")
_MAX_SCHEME = 32
_MAX_URL = 8192  # longer "URLs" are junk; they are still escaped, just not offered as an indicator
_EMBED_BEFORE = frozenset("=/?&#:%")  # a scheme right after one of these is a redirect target inside a URL
_TRAIL = frozenset(".,;:!?*~'\"")  # sentence punctuation that ends a URL rather than belonging to it
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_LOCAL_CHARS = re.compile(r"[\w.+\-]")
_MAX_LOCAL = 64  # RFC 5321 §4.5.3.1.1; also bounds the walk back from every `@`

# Defang markers reporters and other tools use. Each refangs to one character (or `://`).
_MARKER = re.compile(
    r"\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\}|\[@\]|\(@\)|\{@\}|\[at\]|\(at\)|\{at\}|\[:\]|\[://\]|\(://\)",
    re.IGNORECASE,
)
_MARKER_VALUE = {
    "[.]": ".", "(.)": ".", "{.}": ".", "[dot]": ".", "(dot)": ".", "{dot}": ".",
    "[@]": "@", "(@)": "@", "{@}": "@", "[at]": "@", "(at)": "@", "{at}": "@",
    "[:]": ":", "[://]": "://", "(://)": "://",
}  # fmt: skip
# What a WHATWG host parser (browsers) reads as a dot or as nothing (UTS #46 mapping, "ignored"): scanning
# the text as the browser will read it is the only way `evil\u3002example` or `ev\u200bil.example` get
# escaped and become indicators. A `%2E` in a host is percent-decoded by the same parser.
_WIDE_DOT = re.compile("[\uff0e\u3002\uff61]")
_IGNORED = "\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff"
_REFANG_ALL = re.compile(_MARKER.pattern + f"|%2[eE]|[\uff0e\u3002\uff61{_IGNORED}]", re.IGNORECASE)


def _refang_value(token: str) -> str:
    if len(token) == 1:
        return "" if token in _IGNORED else "."
    return "." if token[0] == "%" else _MARKER_VALUE[token.lower()]


_HXXP = re.compile(r"(?<=[hH])(?:xx|XX|xX|Xx)(?=[pP][sS]?://)")
_TRIGGER = re.compile(r"[.:@\[({\uff0e\u3002\uff61]")
# A whitespace-free chunk holding at least one trigger character. The lookbehind pins the start to a chunk
# boundary, so the lazy scan over a trigger-free chunk happens once, not once per character.
_CHUNK = re.compile(r"(?<!\S)\S*?[.:@\[({\uff0e\u3002\uff61]\S*+")
_WRAPPING = "([<{'\".,;!?)]}>*"  # punctuation around a word; on its own it never makes a chunk URL-like


def make_suffix_extractor() -> tldextract.TLDExtract:
    """The PSL snapshot bundled with tldextract, never fetched: the gateway runs without outbound network
    and a fetch would also make escaping depend on the day it ran."""
    return tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True, extra_suffixes=SPECIAL_USE_SUFFIXES
    )


_EXTRACT = make_suffix_extractor()


@dataclass(frozen=True, slots=True)
class Found:
    """One observable in a refanged chunk. `in_path` marks hosts seen inside a URL's path or query, which are
    escaped (they may be redirect targets) but are too noisy (`/files/report.zip`) to offer as indicators."""

    kind: FoundKind
    text: str
    in_path: bool = False


@dataclass(frozen=True, slots=True)
class Scan:
    """Edits are (start, end, replacement) on the refanged chunk, sorted and non-overlapping."""

    edits: list[tuple[int, int, str]]
    found: list[Found]


def candidate_chunks(text: str) -> Iterator[re.Match[str]]:
    """Whitespace-free chunks that may hold something URL-like. Most words of a report do not (`today.` only
    ends a sentence), and skipping them is most of escape_text's speed."""
    for m in _CHUNK.finditer(text):
        core = m.group().strip(_WRAPPING)
        if core.endswith(":") and not core.endswith("::"):
            core = core[:-1]  # `Username:`; a trailing `::` may still end an IPv6 prefix
        if "." in core or "@" in core or "[" in core or "(" in core or "{" in core:
            yield m
        elif core.count(":") >= 2 or "://" in core:  # IPv6 needs two colons, so `10:30` is skipped here
            yield m
        elif ":" in core and _SCHEME_COLON.search(core):  # `https:evil%2Eexample`, `javascript:...`
            yield m
        elif not core.isascii() and _WIDE_DOT.search(core):  # `evil\u3002example`
            yield m


def refang(text: str) -> str:
    """Undo the defang markers; `hxxp` only becomes `http` in front of `://` so words are left alone."""
    if "[" in text or "(" in text or "{" in text:
        text = _MARKER.sub(lambda m: _MARKER_VALUE[m.group().lower()], text)
    return _HXXP.sub("tt", text) if "://" in text else text


def refang_mapped(chunk: str) -> tuple[str, list[int] | None]:
    """Refang a chunk and map each refanged index back to the original (None = identity), so text outside a
    detection can be copied from the original exactly as written."""
    pos: list[int] | None = None
    if "[" in chunk or "(" in chunk or "{" in chunk or "%" in chunk or not chunk.isascii():
        out: list[str] = []
        pos = []
        last = 0
        for m in _REFANG_ALL.finditer(chunk):
            out.append(chunk[last : m.start()])
            pos.extend(range(last, m.start()))
            rep = _refang_value(m.group())
            out.append(rep)
            pos.extend([m.start()] * len(rep))  # a multi-char refang maps wholly onto its marker
            last = m.end()
        if last:  # something was refanged (a match always ends past index 0)
            out.append(chunk[last:])
            pos.extend(range(last, len(chunk)))
            pos.append(len(chunk))
            chunk = "".join(out)
        else:
            pos = None
    if "://" in chunk:
        chunk = _HXXP.sub("tt", chunk)  # same length, so the map still holds
    return chunk, pos


# Chunks up to this length are remembered: a report repeats its URLs (subject, text, HTML link targets) and
# escaping and indicator extraction look at the same chunks, so most scans are answered from the cache. Longer
# chunks are rare, and caching megabyte-long junk would only hold memory.
_CACHED_CHUNK = 512


@dataclass(frozen=True, slots=True)
class ChunkScan:
    """A chunk's refanged form, its index map back to the chunk (None = identity) and what it holds."""

    refanged: str
    pos: tuple[int, ...] | None
    edits: tuple[tuple[int, int, str], ...]
    found: tuple[Found, ...]


def scan_chunk(chunk: str) -> ChunkScan:
    """Refang and scan one chunk from `candidate_chunks`: the step escaping and extraction share."""
    if len(chunk) <= _CACHED_CHUNK:
        return _scan_chunk_cached(chunk)
    return _scan_chunk(chunk)


def _scan_chunk(chunk: str) -> ChunkScan:
    r, pos = refang_mapped(chunk)
    result = scan(r)
    return ChunkScan(r, tuple(pos) if pos is not None else None, tuple(result.edits), tuple(result.found))


_scan_chunk_cached = lru_cache(maxsize=8192)(_scan_chunk)


def _ascii_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def is_ipv4(host: str) -> bool:
    """Dotted quad with each octet 0-255. Leading zeros are accepted here (escaping should over-match)."""
    parts = host.split(".")
    return len(parts) == 4 and all(_ascii_digits(p) and len(p) <= 3 and int(p) <= 255 for p in parts)


@lru_cache(maxsize=16384)
def has_public_suffix(host: str) -> bool:
    """True when the host is at least one label under a public (or special-use) suffix."""
    result = _EXTRACT.extract_str(host.lower())
    return bool(result.suffix and result.domain)


def host_kind(run: str) -> Literal["ipv4", "domain"] | None:
    """Classify a dotted run found in free text. A bare name needs a real public suffix (so `v1.2.3`, `e.g`,
    `file.txt` stay prose), except `www.` names which are hosts whatever follows."""
    if is_ipv4(run) or dotted_quad(run) is not None:
        return "ipv4"
    last = run[run.rfind(".") + 1 :]
    if _ascii_digits(last):
        return None  # versions, section numbers, bad IPs like 999.1.1.1
    if run[:4].lower() == "www.":
        return "domain"
    # Only the last few labels decide the suffix; this also bounds the work on megabyte-long dotted runs.
    tail = run if len(run) <= 253 else ".".join(run.rsplit(".", 6)[1:])
    return "domain" if has_public_suffix(tail) else None


def dotted_quad(run: str) -> str | None:
    """The address a four-part, all-digit run connects to, read as inet_aton and WHATWG do (`0177.0.0.1` is
    octal, 127.0.0.1), or None. Free text only gets this strict form: `1.2` or hex parts stay prose."""
    parts = run.split(".")
    if len(parts) != 4 or not all(_ascii_digits(p) and len(p) <= 4 for p in parts):
        return None
    return whatwg_ipv4(run)


def email_domain_ok(run: str) -> bool:
    """Mail domains need an alphabetic top label (keeps `a@1.2.3.4`-like tokens out of the email path) and
    the same public-suffix test as a bare domain: `foo@gmail.comahhh` is not an address on a real host."""
    last = run[run.rfind(".") + 1 :]
    if not (len(last) >= 2 and (last.isalpha() or last.lower().startswith("xn--"))):
        return False
    return host_kind(run) == "domain"


def valid_ipv6(candidate: str) -> bool:
    """An IPv6 literal. A decimal digit is required so C++ `a::b` or a bare `::` stays prose."""
    if not any(c.isdigit() for c in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _esc_host(host: str) -> str:
    return host.replace(".", "[.]")


def _esc_v6(addr: str) -> str:
    return addr.replace(":", "[:]").replace(".", "[.]")


@dataclass(slots=True)
class _Url:
    start: int
    auth_end: int
    end: int  # trimmed end (exclusive); only meaningful when `indicator` is True
    indicator: bool


def _schemes(r: str) -> list[tuple[int, int, int]]:
    """(scheme start, index of its `:`, authority start) for every `://` with a scheme before it, and for
    every WHATWG special scheme followed by any run of `/` and `\\` (none included) and a host: browsers read
    `http:/host`, `http:\\\\host` and `https:host` as `https://host` (URL Standard, "special authority ignore
    slashes state"). Walks back at most 32 chars and never past the previous `://`, so a megabyte of `http://`
    is still linear."""
    out: list[tuple[int, int, int]] = []
    floor = 0
    i = r.find("://")
    while i != -1:
        j = i
        lo = max(floor, i - _MAX_SCHEME)
        while j > lo and r[j - 1] in _SCHEME_CHARS:
            j -= 1
        while j < i and not (r[j].isascii() and r[j].isalpha()):
            j += 1  # RFC 3986 §3.1: a scheme starts with a letter
        if j < i:
            out.append((j, i, i + 3))
        floor = i + 3
        i = r.find("://", floor)
    if ":" not in r:
        return out
    seen = {colon: k for k, (_, colon, _) in enumerate(out)}
    extra = False
    n = len(r)
    for m in _SPECIAL.finditer(r):
        colon = m.end() - 1
        p = m.end()
        while p < n and r[p] in "/\\":
            p += 1
        if colon in seen:
            if p > colon + 3:  # `http:///\\host`: the extra slashes are skipped too
                k = seen[colon]
                out[k] = (out[k][0], colon, p)
            continue
        if p < n and (r[p] == "[" or _URL_HOST.match(r, p)):
            out.append((m.start(), colon, p))
            extra = True
    if extra:
        out.sort()
    return out


def _trim_url(r: str, start: int, end: int) -> int:
    """Drop sentence punctuation and unbalanced closing brackets from a URL's end, so `(https://a.example/b)`
    and `see https://a.example/x.` give the URL without the prose around it."""
    counts = {o: r.count(o, start, end) for o in "([{"}
    closes = {c: r.count(c, start, end) for c in _CLOSERS}
    while end > start:
        ch = r[end - 1]
        if ch in _TRAIL:
            end -= 1
        elif ch in _CLOSERS and closes[ch] > counts[_CLOSERS[ch]]:
            closes[ch] -= 1
            end -= 1
        else:
            break
    return end


def _scan_urls(r: str, edits: list[tuple[int, int, str]], found: list[tuple[int, Found]]) -> list[_Url]:
    schemes = _schemes(r)
    if not schemes:
        return []
    stops = [m.start() for m in _URL_STOP.finditer(r)]
    n = len(r)
    # Next scheme that starts a new URL rather than sitting in this one's query (computed backwards: linear).
    next_free = [n] * len(schemes)
    for k in range(len(schemes) - 2, -1, -1):
        nxt = schemes[k + 1][0]
        embedded = nxt > 0 and r[nxt - 1] in _EMBED_BEFORE
        next_free[k] = next_free[k + 1] if embedded else nxt
    urls: list[_Url] = []
    for k, (s, colon, p) in enumerate(schemes):
        scheme = r[s:colon]
        low = scheme.lower()
        sep_rep = "hxxp://" if low == "http" else "hxxps://" if low == "https" else f"{scheme}[://]"
        rep = [sep_rep]
        bound = schemes[k + 1][0] if k + 1 < len(schemes) else n
        m = _AUTH_END.search(r, p, bound)
        q = m.start() if m else bound
        at = r.rfind("@", p, q)
        h = p
        if at != -1:
            rep.append(_esc_host(r[p:at]).replace("@", "[@]") + "[@]")
            h = at + 1
        host_kind_: FoundKind | None = None
        host_end = h
        canonical_host: tuple[int, int, str] | None = None
        if h < q and r[h] == "[":
            close = r.find("]", h, q)
            if close != -1 and valid_ipv6(r[h + 1 : close].split("%", 1)[0]):
                rep.append("[" + _esc_v6(r[h + 1 : close]) + "]")
                host_kind_ = "ipv6"
                host_end = close + 1
        else:
            hm = _URL_HOST.match(r, h, q)
            if hm:
                host = hm.group()
                number = whatwg_ipv4(host) if low in _SPECIAL_NAMES else None
                if number is not None and "." not in host:
                    # `hxxp://3232235777` would still parse as a URL with a host; a marker in the separator
                    # makes the scheme invalid (refang restores it, so escaping stays idempotent)
                    rep[0] = f"{'hxxps' if low == 'https' else 'hxxp' if low == 'http' else scheme}[://]"
                rep.append(_esc_host(host))
                host_kind_ = "ipv4" if is_ipv4(host) or number is not None else "domain"
                host_end = hm.end()
                if number is not None and number != host:
                    canonical_host = (h, host_end, number)
        if host_kind_ and host_end < q and (pm := _PORT.match(r, host_end, q)):
            rep.append(pm.group())
            host_end = pm.end()
        edits.append((s, host_end if host_kind_ else h, "".join(rep)))
        # The URL as an indicator: up to a delimiter or the next URL that is not embedded in this one.
        stop_i = bisect.bisect_left(stops, p)
        end = min(stops[stop_i] if stop_i < len(stops) else n, next_free[k])
        ok = host_kind_ is not None and end - s <= _MAX_URL
        if ok:
            end = _trim_url(r, host_end, end)
            # The URL as a browser reads it: `scheme://`, whatever slashes were written, and a numeric host
            # (`3232235777`, `0xC0.0250.1.1`) as the dotted quad it connects to.
            if canonical_host is not None:
                hs, he, number = canonical_host
                text = f"{scheme}://{r[p:hs]}{number}{r[he:end]}"
                found.append((s, Found("url", text)))
            else:
                found.append((s, Found("url", f"{scheme}://{r[p:end]}")))
        urls.append(_Url(s, host_end, end, ok))
    return urls


_SPECIAL_NAMES = frozenset({"http", "https", "ftp", "ws", "wss"})


def _ipv4_number(part: str) -> int | None:
    """One part of a WHATWG IPv4 host: decimal, `0x` hex or leading-zero octal (URL Standard, IPv4 parser)."""
    if not part.isascii() or len(part) > 34:
        return None
    base = 10
    if part[:2].lower() == "0x":
        part, base = part[2:] or "0", 16
    elif len(part) > 1 and part[0] == "0":
        part, base = part[1:], 8
    try:
        return int(part, base) if part.isalnum() else None
    except ValueError:
        return None


def whatwg_ipv4(host: str) -> str | None:
    """The dotted quad a browser connects to for an IPv4-looking host of a special URL (`3232235777`,
    `0xC0.0250.1.1`, `192.168.257`), or None when the host is a name."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4 or _ipv4_number(parts[-1]) is None:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(x is None for x in numbers):
        return None
    nums = [x for x in numbers if x is not None]
    if any(x > 255 for x in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        return None
    value = nums[-1] + sum(x << (8 * (3 - i)) for i, x in enumerate(nums[:-1]))
    return str(ipaddress.IPv4Address(value))


def _script_uris(r: str, edits: list[tuple[int, int, str]], found: list[tuple[int, Found]]) -> None:
    """`data:` and `javascript:` URIs have no host but run or render when clicked: `javascript[:]...`."""
    taken = [(a, b) for a, b, _ in edits]
    stops = _URL_STOP.search
    for m in _SCRIPT.finditer(r):
        s, colon = m.start(), m.end() - 1
        if any(a <= s < b for a, b in taken):
            continue
        stop = stops(r, m.end())
        end = _trim_url(r, m.end(), stop.start() if stop else len(r))
        edits.append((s, colon + 1, r[s:colon] + "[:]"))
        if end > m.end() and end - s <= _MAX_URL:
            found.append((s, Found("url", r[s:colon].lower() + r[colon:end])))
    edits.sort()


def scan(r: str) -> Scan:
    """Find everything URL-like in one refanged, whitespace-free chunk."""
    edits: list[tuple[int, int, str]] = []
    found: list[tuple[int, Found]] = []
    urls = _scan_urls(r, edits, found) if ":" in r else []
    if ":" in r and _SCRIPT.search(r):
        _script_uris(r, edits, found)
    # Candidate (start, end, replacement, found) from the free-text scanners; merged below, URLs win overlaps.
    cands: list[tuple[int, int, str, list[Found]]] = []
    if r.count(":") >= 2:
        for m in _V6.finditer(r):
            text = m.group()
            if valid_ipv6(text):
                cands.append((m.start(), m.end(), _esc_v6(text), [Found("ipv6", text)]))
    if "." in r:
        _host_candidates(r, cands)
    if not cands:
        return Scan(edits, [f for _, f in found])
    cands.sort(key=lambda c: c[0])
    path_starts = [u.auth_end for u in urls]
    # Slashes and URL delimiters, for hosts in a path with no scheme (`a.example/files/evil.com`): in C, so a
    # megabyte-long chunk costs one regex pass and a bisect per candidate.
    marks = [(m.start(), m.group() == "/") for m in _PATH_MARK.finditer(r)] if "/" in r else []
    mark_at = [i for i, _ in marks]
    taken = sorted(edits)
    merged: list[tuple[int, int, str]] = []
    ti = 0
    last_end = 0
    for start, end, rep, items in cands:
        while ti < len(taken) and taken[ti][1] <= start:
            last_end = max(last_end, taken[ti][1])
            ti += 1
        if start < last_end or (ti < len(taken) and taken[ti][0] < end):
            continue  # overlaps a URL's scheme/authority or an earlier candidate
        merged.append((start, end, rep))
        last_end = end
        ui = bisect.bisect_right(path_starts, start) - 1
        in_path = (ui >= 0 and start < urls[ui].end) or _after_slash(r, start, marks, mark_at)
        found.extend((start, Found(f.kind, f.text, in_path)) for f in items)
    edits = sorted(edits + merged)
    found.sort(key=lambda sf: sf[0])
    return Scan(edits, [f for _, f in found])


_PATH_MARK = re.compile(r"/|" + _URL_STOP.pattern)


def _after_slash(r: str, start: int, marks: list[tuple[int, bool]], mark_at: list[int]) -> bool:
    """True when a free-text candidate sits in a path: a `/` comes after the last delimiter before it. A host
    right after a leading `//` (scheme-relative `//evil.example/x`) is an authority, not a path."""
    k = bisect.bisect_left(mark_at, start) - 1
    if k < 0 or not marks[k][1]:
        return False
    slash = marks[k][0]
    if slash == start - 1 and slash >= 1 and r[slash - 1] == "/":
        before = r[slash - 2] if slash >= 2 else ""
        return not (not before or before in _WRAPPING or before == "=")
    return True


def _host_candidates(r: str, cands: list[tuple[int, int, str, list[Found]]]) -> None:
    for m in _HOST_RUN.finditer(r):
        run, start, end = m.group(), m.start(), m.end()
        if end < len(r) and r[end] == "@":
            nxt = _HOST_RUN.match(r, end + 1)
            if nxt and email_domain_ok(nxt.group()):
                continue  # this run is the local part of the address that follows
        if start > 0 and r[start - 1] == "@" and email_domain_ok(run):
            lo = start - 1
            floor = max(0, lo - _MAX_LOCAL)
            while lo > floor and _LOCAL_CHARS.match(r, lo - 1):
                lo -= 1
            while lo < start - 1 and r[lo] == ".":
                lo += 1
            if lo < start - 1:
                local = r[lo : start - 1]
                rep = _esc_host(local) + "[@]" + _esc_host(run)
                cands.append((lo, end, rep, [Found("email", f"{local}@{run}")]))
                continue
        kind = host_kind(run)
        if kind is not None:
            # escaped either way (over-escaping is safe); only offered when nothing unknown is glued to it
            value = (dotted_quad(run) or run) if kind == "ipv4" else run
            items = [] if _glued_to_marker(r, start, end) else [Found(kind, value)]
            cands.append((start, end, _esc_host(run), items))


_OPENERS = "[({"
_BRACKETS = "[](){}"
_GLUE_WINDOW = 16  # how far a bracket group is looked at; markers are short, and this keeps the check O(1)


def _name_char(ch: str) -> bool:
    return ch == "." or ch == "-" or ch.isalnum() or ch == "_"


def _glued_to_marker(r: str, start: int, end: int) -> bool:
    """True when a dotted run is only part of a name because an unknown bracket marker sits in it (known
    markers were refanged before the scan): `foo[-]bar.com`, `[www].example.com`, `192[.168.1.1`,
    `mail.google[-].com`. Offering the run would index an innocent parent (or a prefix) of the real name.
    Brackets that only wrap the run (`(evil.com)`, `[evil.com]`) leave it a name of its own."""
    i = start - 1
    dotted = i >= 0 and r[i] == "."
    if dotted:
        i -= 1
    if i >= 0 and r[i] in _BRACKETS:
        if dotted:
            return True
        if r[i] in _OPENERS:
            return i > 0 and _name_char(r[i - 1])
        j = r.rfind(_CLOSERS[r[i]], max(0, i - _GLUE_WINDOW), i)
        return j > 0 and _name_char(r[j - 1])
    if end < len(r) and r[end] in _OPENERS:
        k = r.find({"[": "]", "(": ")", "{": "}"}[r[end]], end + 1, end + 1 + _GLUE_WINDOW)
        after = k + 1 if k != -1 else end + 1
        return after < len(r) and _name_char(r[after])
    return False


def split_url(url: str) -> tuple[str, str, str, str, str] | None:
    """(scheme, userinfo, host, port, rest) of a refanged URL, using the same rules as the scanner; the host
    of an IPv6 literal keeps its brackets. None when there is no scheme or no host."""
    colon = url.find("://")
    if colon <= 0:
        return None
    scheme = url[:colon]
    p = colon + 3
    m = _AUTH_END.search(url, p)
    q = m.start() if m else len(url)
    at = url.rfind("@", p, q)
    userinfo = url[p:at] if at != -1 else ""
    h = at + 1 if at != -1 else p
    if h < q and url[h] == "[":
        close = url.find("]", h, q)
        if close == -1:
            return None
        host, host_end = url[h : close + 1], close + 1
    else:
        hm = _URL_HOST.match(url, h, q)
        if not hm:
            return None
        host, host_end = hm.group(), hm.end()
    port = ""
    if host_end < q and (pm := _PORT.match(url, host_end, q)):
        port, host_end = pm.group()[1:], pm.end()
    return scheme, userinfo, host, port, url[host_end:]
