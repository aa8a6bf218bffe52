"""Case IDs: minting, validating and finding them in subjects and bodies.

A case ID looks like ``ABU-7K3M-Q9D2``: a configurable prefix and eight Crockford base32 characters, the
last of which is a check character. The seven payload characters are random (35 bits from `secrets`), so
any node can mint an ID without coordination; the store must still enforce uniqueness and re-mint on a
collision (birthday bound: ~0.15 % chance of any collision at 10,000 cases).

Check character
---------------
The eight characters are read as elements of GF(32) = GF(2)[x] / (x^5 + x^2 + 1) (a primitive
polynomial, so ``a = x`` has multiplicative order 31). Position ``i`` (0..7) gets weight ``a^(8-i-1)``, so
the check character has weight 1, and a valid ID satisfies ``sum(w_i * c_i) == 0`` (addition is XOR).
Because the code is linear, an error changes that syndrome by an amount that does not depend on the rest
of the ID:

* a substitution ``c -> c'`` at position ``i`` adds ``w_i * (c + c')``, non-zero because ``w_i != 0``,
  ``c != c'`` and a field has no zero divisors;
* swapping neighbours ``c, c'`` at ``i, i+1`` adds ``(w_i + w_{i+1}) * (c + c')``, non-zero because the
  eight weights are distinct powers of a primitive element (order 31 > 8) and ``c != c'``.

So every single substitution and every transposition (adjacent or not) is caught, which a weighted sum
mod 37 squeezed onto 32 symbols cannot promise. ``tests/test_case_ref.py`` proves both by enumeration.

The prefix does not take part in the check: prefixes are configuration and may be renamed, and the part a
person retypes from a subject line is the random tail. The prefix is matched exactly (case-insensitively).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import secrets
import string
import unicodedata
from functools import lru_cache

__all__ = [
    "ALPHABET",
    "DEFAULT_PREFIX",
    "WEIGHTS",
    "check_char",
    "decode_header_text",
    "find_case_ids",
    "find_case_ids_in_body",
    "is_valid_case_id",
    "new_case_id",
    "parse_case_id",
]

DEFAULT_PREFIX = "ABU"

# Crockford base32: no I, L, O (confusable with 1, 1, 0) and no U (accidental obscenity).
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAYLOAD_LEN = 7
_ID_LEN = _PAYLOAD_LEN + 1

# Crockford's decoding rule: accept lower case, read O as 0 and I/L as 1. U stays invalid.
_DECODE: dict[str, int] = {ch: i for i, ch in enumerate(ALPHABET)}
_DECODE.update({ch.lower(): i for ch, i in list(_DECODE.items())})
_DECODE.update({"O": 0, "o": 0, "I": 1, "i": 1, "L": 1, "l": 1})

# --- GF(32) arithmetic -------------------------------------------------------------------------------
_GF_POLY = 0b100101  # x^5 + x^2 + 1, primitive over GF(2)


def _gf_mul(a: int, b: int) -> int:
    """Carry-less multiply reduced by the field polynomial (only used to build the tables at import)."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a & 0b100000:
            a ^= _GF_POLY
    return result


def _gf_pow(base: int, exp: int) -> int:
    result = 1
    for _ in range(exp):
        result = _gf_mul(result, base)
    return result


# Weights a^7 .. a^0: distinct and non-zero, the check position last with weight 1.
WEIGHTS: tuple[int, ...] = tuple(_gf_pow(0b10, _ID_LEN - 1 - i) for i in range(_ID_LEN))
# Per-position multiplication tables so the hot path is eight lookups and XORs.
_MUL: tuple[tuple[int, ...], ...] = tuple(tuple(_gf_mul(w, v) for v in range(32)) for w in WEIGHTS)


def _syndrome(values: list[int] | tuple[int, ...]) -> int:
    """Weighted GF(32) sum over whatever positions are given (zero for a valid 8-symbol ID)."""
    acc = 0
    for table, value in zip(_MUL, values, strict=False):
        acc ^= table[value]
    return acc


def check_char(payload: str) -> str:
    """The check character for seven payload characters (lenient Crockford input accepted).

    With the check weight equal to 1 and addition being XOR, the check symbol is simply the syndrome of
    the payload: adding it makes the total zero.
    """
    if len(payload) != _PAYLOAD_LEN:
        raise ValueError(f"payload must be {_PAYLOAD_LEN} characters, got {len(payload)}")
    try:
        values = [_DECODE[ch] for ch in payload]
    except KeyError as exc:
        raise ValueError(f"not a Crockford base32 character: {exc.args[0]!r}") from None
    return ALPHABET[_syndrome(values)]


def _verifies(body: str) -> bool:
    """True when eight canonical symbols carry a correct check character."""
    return _syndrome([_DECODE[ch] for ch in body]) == 0


# --- prefixes and patterns -----------------------------------------------------------------------------
_PREFIX_RE = re.compile(r"[A-Z0-9]{2,10}")


def _normalise_prefix(prefix: str) -> str:
    """Upper-case and validate; a bad prefix is a configuration error, so it raises rather than matching."""
    upper = prefix.upper() if isinstance(prefix, str) and prefix.isascii() else ""
    if not _PREFIX_RE.fullmatch(upper):
        raise ValueError(f"case ID prefix must be 2-10 ASCII letters or digits, got {prefix!r}")
    return upper


# A symbol as typed: every letter but U/u (Crockford's I, L, O are read as 1, 1, 0).
_SYM = "[0-9A-TV-Za-tv-z]"
# Instead of each hyphen: one hyphen with a little space around it, or one or two blanks. Bounded so a
# megabyte of spaces after a prefix costs a constant, not a scan.
_SEP = r"(?:[ \t]{0,2}-[ \t]{0,2}|[ \t]{1,2})"
# ASCII-only boundaries: an ID inside a longer alphanumeric run is not an ID, but CJK text written right
# against it ("案件ABU-…已处理") is normal and must still match.
_BEFORE = r"(?<![0-9A-Za-z])"
_AFTER = r"(?![0-9A-Za-z])"


@lru_cache(maxsize=32)
def _search_re(prefix: str) -> re.Pattern[str]:
    # Zero-width lookahead so overlapping candidates are all seen: a failed candidate must not swallow the
    # start of a valid one (prefix "ABCD" in "ABCD-ABCD-1234-5678").
    core = rf"(?i:{re.escape(prefix)}){_SEP}({_SYM}{{4}}){_SEP}({_SYM}{{4}}){_AFTER}"
    return re.compile(rf"{_BEFORE}(?=({core}))", re.ASCII)


@lru_cache(maxsize=32)
def _full_re(prefix: str | None) -> re.Pattern[str]:
    head = r"([0-9A-Za-z]{2,10})" if prefix is None else rf"(?i:({re.escape(prefix)}))"
    return re.compile(rf"{head}{_SEP}({_SYM}{{4}}){_SEP}({_SYM}{{4}})", re.ASCII)


# --- text normalisation ----------------------------------------------------------------------------------
# Invisible characters that clients, copy-paste and spam filters insert: zero-width (U+200B-200D), marks
# and bidi controls (U+200E-200F, U+202A-202E, U+2066-2069), word joiner and invisible operators
# (U+2060-2064), BOM/ZWNBSP (U+FEFF) and the soft hyphen (U+00AD, which Outlook inserts when wrapping).
_INVISIBLE = [
    0x00AD,
    *range(0x200B, 0x2010),
    *range(0x202A, 0x202F),
    *range(0x2060, 0x2065),
    *range(0x2066, 0x206A),
    0xFEFF,
]
# Dashes people, word processors and input methods put where we wrote a hyphen. NFKC already folds
# U+2011 -> U+2010, U+FE58 -> U+2014 and U+FE63/U+FF0D -> '-', but they are listed so the table does not
# depend on normalisation order.
_DASHES = [*range(0x2010, 0x2016), 0x2212, 0xFE58, 0xFE63, 0xFF0D]
_CLEAN_TABLE: dict[int, int | None] = {cp: None for cp in _INVISIBLE} | {cp: ord("-") for cp in _DASHES}


def _normalise_text(text: str) -> str:
    """NFKC (full-width letters/digits/punctuation to ASCII), then drop invisibles and unify dashes.

    Pure ASCII text is returned untouched: none of the steps can change it, and that is the common case
    at 800 msg/s.
    """
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate(_CLEAN_TABLE)


# Length-preserving lower-casing for the prefix pre-scan (str.lower() may change length outside ASCII).
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# Lenient symbol -> canonical symbol (lower case, O, I, L).
_CANON_TABLE = str.maketrans({ch: ALPHABET[v] for ch, v in _DECODE.items()})


def _canonical(prefix: str, group1: str, group2: str) -> str | None:
    """Canonical upper-case form if the check character verifies, else None."""
    body = (group1 + group2).translate(_CANON_TABLE)
    if not _verifies(body):
        return None
    return f"{prefix.upper()}-{body[:4]}-{body[4:]}"


# --- public API: IDs -----------------------------------------------------------------------------------
def new_case_id(prefix: str = DEFAULT_PREFIX) -> str:
    """Mint a random case ID; `secrets` so IDs are not guessable from earlier ones."""
    canon_prefix = _normalise_prefix(prefix)
    bits = secrets.randbits(5 * _PAYLOAD_LEN)
    payload = "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(_PAYLOAD_LEN))
    body = payload + check_char(payload)
    return f"{canon_prefix}-{body[:4]}-{body[4:]}"


def parse_case_id(value: str, prefix: str | None = DEFAULT_PREFIX) -> str | None:
    """The canonical form of a whole value that is one case ID (lenient input), else None.

    ``prefix=None`` accepts any well-formed prefix; the reply-token verifier uses that because a token
    must stay valid after the desk renames its prefix.
    """
    if not isinstance(value, str) or len(value) > 200:
        return None
    canon_prefix = None if prefix is None else _normalise_prefix(prefix)
    match = _full_re(canon_prefix).fullmatch(_normalise_text(value).strip())
    if match is None:
        return None
    return _canonical(match.group(1), match.group(2), match.group(3))


def read_case_id(value: str, prefix: str = DEFAULT_PREFIX) -> tuple[str | None, str | None]:
    """A case ID as a person types it on the command line or reads it out on the phone: any case, spaces
    or dashes anywhere or none, the prefix left out, O for 0, I/L for 1 (`abu 18hj on15`, `ABU18HJ0N15`,
    `18HJ-0N15`). Returns (canonical ID, None) or (None, why not) so the CLI can tell a typo in the check
    character ("check character") from something that is not a case ID at all."""
    canon_prefix = _normalise_prefix(prefix)
    if not isinstance(value, str) or len(value) > 200:
        return None, "not a case ID"
    compact = re.sub(r"[\s\-_]+", "", _normalise_text(value)).upper()
    if compact.startswith(canon_prefix) and len(compact) == len(canon_prefix) + 8:
        compact = compact[len(canon_prefix) :]
    shape = f"expected {canon_prefix}-XXXX-XXXX"
    if len(compact) != 8 or not compact.isascii() or not compact.isalnum():
        return None, f"not a case ID ({shape})"
    if any(ch not in _DECODE for ch in compact):
        return None, f"not a case ID: {shape} in Crockford base32 (no U)"
    canonical = _canonical(canon_prefix, compact[:4], compact[4:])
    if canonical is None:
        return None, "not a valid case ID: check character"
    return canonical, None


def is_valid_case_id(value: str, prefix: str = DEFAULT_PREFIX) -> bool:
    """True when the whole value is one case ID whose check character verifies (lenient input)."""
    return parse_case_id(value, prefix) is not None


def find_case_ids(text: str, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Every verified case ID in the text, canonical and deduplicated, in order of appearance.

    No reply-prefix or tag stripping is needed: the ID pattern is searched anywhere, bounded by
    non-alphanumerics, so ``RE[3]: AW: [EXTERNAL] …`` and auto-link mangling are simply ignored. Other
    systems' ticket numbers do not match because they lack the prefix-and-two-groups shape, and a random
    string that happens to have it passes the check character only 1 time in 32.
    """
    if not isinstance(text, str) or not text:
        return []
    canon_prefix = _normalise_prefix(prefix)
    clean = _normalise_text(text)
    # Most messages never mention the prefix: str.find on a lower-cased copy rules that out ~10x faster
    # than a regex scan, and the scan then starts at the first occurrence.
    lowered = clean.lower() if clean.isascii() else clean.translate(_ASCII_LOWER)
    first = lowered.find(canon_prefix.lower())
    if first < 0:
        return []
    found: list[str] = []
    seen: set[str] = set()
    taken_until = -1
    for match in _search_re(canon_prefix).finditer(clean, first):
        if match.start() < taken_until:
            continue  # overlaps an ID already accepted
        case_id = _canonical(canon_prefix, match.group(2), match.group(3))
        if case_id is None:
            continue
        taken_until = match.end(1)
        if case_id not in seen:
            seen.add(case_id)
            found.append(case_id)
    return found


# --- bodies ------------------------------------------------------------------------------------------------
_NONEMPTY_LINE_RE = re.compile(r"^[^\S\n]*\S[^\n]*", re.M)
_QUOTED_LINE_RE = re.compile(r"^[^\S\n]*>[^\n]*", re.M)
# Lines that start the quoted original in the common clients (Outlook, Apple Mail, Gmail, Thunderbird,
# in the languages the desk sees most). Every repetition is bounded so hostile input stays linear.
_SEPARATOR_RE = re.compile(
    r"^[^\S\n]*(?:"
    r"-{2,}[^\S\n]*(?:original message|ursprüngliche nachricht|message d'origine|mensaje original"
    r"|messaggio originale|oorspronkelijk bericht|mensagem original|forwarded message"
    r"|weitergeleitete nachricht|message transféré)"
    r"|_{20}"
    r"|begin forwarded message:"
    r"|(?:from|von|de|da|van):[^\n]{0,300}\n[^\S\n]*(?:sent|gesendet|envoyé|enviado|inviato|verzonden):"
    r")",
    re.M | re.I,
)
# Attribution lines: "On … wrote:", "Am … schrieb …:", "Le … a écrit :", and friends. Found by the verb,
# then judged by their line, because the line itself may be long or wrapped.
_ATTRIBUTION_VERB_RE = re.compile(
    r"\b(?:wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev|napisał|kirjoitti)\b", re.I
)
_ATTRIBUTION_START_RE = re.compile(r"[^\S\n]*(?:on|am|le|el|il|op|em|den|w dniu|dne)\b", re.I)
# The verbs case-folded, for a pre-check: `casefold()` and `in` run in C, while the case-insensitive
# alternation above costs tens of nanoseconds per character, so a long body that quotes nothing is cleared
# without it. (A verb spelled with exotic folds such as U+0130 may slip past; it would only hide a quoted
# tail, i.e. a threading hint, never content.)
_ATTRIBUTION_VERBS = ("wrote", "schrieb", "a écrit", "escribió", "ha scritto", "schreef", "escreveu", "skrev",
                      "napisał", "kirjoitti")  # fmt: skip
_MAX_ATTRIBUTION_LINE = 400


def _attribution_start(text: str) -> int:
    """Offset of the first attribution line, or -1.

    Attributions end with a colon ("… wrote:", "… schrieb X <x@y>:", "… a écrit :"), which is what tells
    them from prose such as "On Monday he wrote that…". A client may wrap the line, so a verb line that
    starts with the locale's "On/Am/Le…" also counts when the *next* line ends with the colon. Each line
    is judged once, so a megabyte line full of "wrote" stays linear.
    """
    folded = text.casefold()
    if not any(verb in folded for verb in _ATTRIBUTION_VERBS):
        return -1
    line_end = -1
    for match in _ATTRIBUTION_VERB_RE.finditer(text):
        if match.start() < line_end:
            continue
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = _line_end(text, match.end())
        if line_end - line_start > _MAX_ATTRIBUTION_LINE:
            continue
        if text[line_start:line_end].rstrip().endswith(":"):
            return line_start
        if _ATTRIBUTION_START_RE.match(text, line_start) and line_end < len(text):
            next_end = _line_end(text, line_end + 1)
            if next_end - line_end <= _MAX_ATTRIBUTION_LINE and text[line_end:next_end].rstrip().endswith(
                ":"
            ):
                return line_start
    return -1


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _quoted_tail_start(text: str) -> int:
    """Offset where the quoted original begins (the earliest separator), or -1."""
    match = _SEPARATOR_RE.search(text)
    candidates = [pos for pos in (match.start() if match else -1, _attribution_start(text)) if pos >= 0]
    return min(candidates) if candidates else -1


def find_case_ids_in_body(text: str, prefix: str = DEFAULT_PREFIX, first_lines: int = 20) -> list[str]:
    """Case IDs where a reply puts them: the top of the fresh text and the quoted original.

    Rule: search (1) the first `first_lines` non-empty lines, (2) every line starting with ``>``, and
    (3) everything from the first reply separator on (``-----Original Message-----``, an Outlook
    ``From:/Sent:`` block, a long underscore rule, ``On … wrote:``, ``Am … schrieb``, ``Le … a écrit``, …).
    The middle of a fresh message is skipped on purpose: reports paste logs and other desks' mails, and a
    case ID mentioned there is evidence, not a threading signal. Order is order of appearance.
    """
    if not isinstance(text, str) or not text:
        return []
    head_end = 0
    if first_lines > 0:
        for count, match in enumerate(_NONEMPTY_LINE_RE.finditer(text), start=1):
            head_end = match.end()
            if count >= first_lines:
                break
    rest = text[head_end:]
    tail_start = _quoted_tail_start(rest)
    middle = rest if tail_start < 0 else rest[:tail_start]
    parts = [text[:head_end], *_QUOTED_LINE_RE.findall(middle)]
    if tail_start >= 0:
        parts.append(rest[tail_start:])
    return find_case_ids("\n".join(parts), prefix)


# --- RFC 2047 ---------------------------------------------------------------------------------------------
# encoded-word = "=?" charset ["*" language] "?" encoding "?" encoded-text "?=" (RFC 2047 §2, RFC 2231 §5).
# encoded-text may not contain "?" or white space, which keeps this pattern linear.
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]{1,64})\?([bBqQ])\?([^?\s]*)\?=")
# RFC 5322 §2.2.3: unfolding removes a CRLF that is followed by WSP. Bare LF/CR from sloppy MTAs too.
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_STRAY_EOL_RE = re.compile(r"[\r\n]+")
# Labels that mail clients write but Python's codec registry does not know, or knows too narrowly.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",  # mislabelled GBK/GB18030 is the norm; gb18030 is a superset
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",  # logical-order Hebrew: same bytes
    "windows-874": "cp874",
    "ks_c_5601-1987": "cp949",  # Outlook's label for Korean is really the Windows code page
    "x-sjis": "shift_jis",
    "unicode-1-1-utf-7": "utf-7",
}


def _text_codec(charset: str) -> str | None:
    """A codec name that decodes bytes to text, or None for unknown labels and bytes-to-bytes codecs."""
    label = charset.split("*", 1)[0].strip().lower()  # drop the RFC 2231 language tag
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    # Reject transform codecs (base64, rot13, zlib…): a header must not name its own decompression bomb.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _decode_bytes(data: bytes, charset: str) -> str:
    """Declared charset first, then UTF-8 (the usual truth behind a wrong label), then lossy."""
    codec = _text_codec(charset)
    for candidate in (codec, "utf-8"):
        if candidate is None:
            continue
        try:
            return data.decode(candidate)
        except (UnicodeError, LookupError, ValueError):
            continue
    try:
        return data.decode(codec or "utf-8", errors="replace")
    except (UnicodeError, LookupError, ValueError):
        return data.decode("latin-1")


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    """The octets of one encoded word, or None when it is malformed (the caller keeps the raw text)."""
    try:
        raw = payload.encode("ascii")
    except UnicodeEncodeError:
        return None
    if encoding in "bB":
        try:
            # Some mailers drop the padding; restore it rather than lose the word.
            return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
    # Q encoding (RFC 2047 §4.2): QP with "_" for space; a2b_qp(header=True) does exactly that.
    return binascii.a2b_qp(raw, header=True)


def decode_header_text(value: str) -> str:
    """Decode an RFC 2047 header value, never raising.

    Hand-rolled over `base64`/`binascii` rather than `email.header.decode_header` because the latter
    raises on one bad word and loses the whole header, and mis-handles spacing around unencoded text.
    Adjacent words in the same charset are concatenated *as bytes* before decoding, so a UTF-8 sequence
    (or a case ID) split across two encoded words comes out whole. White space between two encoded words
    is dropped (RFC 2047 §6.2); anything malformed is kept as the raw text.
    """
    if not isinstance(value, str):
        return ""
    text = _STRAY_EOL_RE.sub("", _FOLD_RE.sub("", value))
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: bytearray = bytearray()
    pending_charset: str | None = None
    last_end = 0
    last_was_word = False

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(_decode_bytes(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None

    for match in _ENCODED_WORD_RE.finditer(text):
        gap = text[last_end : match.start()]
        charset, encoding, payload = match.groups()
        data = _word_bytes(encoding, payload)
        if data is None:
            flush()
            out.append(gap + match.group(0))
            last_end, last_was_word = match.end(), False
            continue
        if not (last_was_word and (gap == "" or gap.isspace())):
            flush()
            out.append(gap)
        elif pending_charset is not None and pending_charset.lower() != charset.lower():
            flush()
        pending_charset = charset if pending_charset is None else pending_charset
        pending.extend(data)
        last_end, last_was_word = match.end(), True
    flush()
    out.append(text[last_end:])
    return "".join(out)
