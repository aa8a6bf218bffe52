"""Machine-written abuse reports: ARF (RFC 5965 / RFC 6591), X-ARF 0.2 and XARF v3/v4 JSON.

Everything here is pure and total: bytes in, a `MachineReport` or `None` out. A report we cannot read is not
an error for the gateway (the raw message is stored either way), so nothing in this module raises.

Conventions the desk relies on:

* `fields` keys of the header-style formats (ARF, X-ARF) are lower-cased (`feedback-type`, `source-ip`,
  `reported-uri`): those field names are case-insensitive like mail headers (RFC 5322 §1.2.2), senders in the
  wild spell them `Source-IP`, `Source-Ip` or `source-ip`, and lower case needs no table of canonical
  spellings for fields we have never seen.
* ARF fields that RFC 5965 §3.2 lets repeat are always lists; any other field is a string, or a list when a
  sender repeated it anyway (evidence is never dropped).
* XARF JSON `fields` is the JSON object exactly as sent (JSON keys are case-sensitive). `category` is the v4
  category (`content`) and the precise type stays in `fields["type"]` (`csam`); use `report_type()` and
  `is_csam()` instead of reading the per-format fields.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import quopri
import re
from email import policy
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.message import Message
from io import BytesIO

from parsers.mime import MimeTree, as_tree, raw_header
from parsers.types import MachineReport

# RFC 5965 §3.2: the only fields that may appear more than once (RFC 6591 §3.1 adds none).
_ARF_REPEATABLE = frozenset({"reported-uri", "reported-domain", "authentication-results", "original-rcpt-to"})
# RFC 5965 §2 item (c) / RFC 6522 §3: the original as a whole message or as headers only.
_ORIGINAL_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"})
_MAX_JSON = 10 * 1024 * 1024

# RFC 5322 §2.2: field-name is printable US-ASCII except ":".
_FIELD_LINE = re.compile(r"^([!-9;-~]+)[ \t]*:[ \t]*(.*)$")
_YAML_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)[ \t]*:(?:[ \t]+(.*))?$")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TOKEN = re.compile(r"[A-Za-z0-9_.+-]+")
_CSAM_TYPES = frozenset({"csam", "childabuse", "child_abuse", "child-abuse", "child-abuse-material"})


def parse_machine_report(source: bytes | MimeTree) -> MachineReport | None:
    """The report carried by a message (its tree, or raw bytes), or None when it is not a machine report we
    can read.

    Order matters only for pathological mail that claims several formats; ARF is checked first because it is
    by far the most common and its MIME structure is the least ambiguous. The tree's leaves are walked
    within its `ParseLimits`; they never include what is inside a message/* part (a report forwarded by a
    person arrives inside message/rfc822, RFC 2046 §5.2.1, and is the person's evidence, not a report).
    """
    if not isinstance(source, MimeTree) and not _may_carry_report(source):
        return None
    try:
        tree = as_tree(source)
        msg = tree.root
        leaves = list(tree.leaves)
        return (
            _parse_arf(msg, leaves)
            or _parse_x_arf(msg, leaves)
            or _parse_xarf_json(leaves)
            or _parse_jmrp(leaves)
        )
    except Exception:
        # The contract is "never raise": a message that defeats the stdlib parser is simply not a report.
        return None


# A machine report announces itself in bytes that MIME never encodes (a content type, a header name) or
# sits in a part that is JSON, braces and all, or encoded (then it cannot be seen without decoding).
_REPORT_MARKS = (
    b"feedback-report",
    b"x-arf",
    b"json",
    b"{",
    b"base64",
    b"quoted-printable",
    b"uue",
    b"x-hmxmroriginalrecipient",
)


def _may_carry_report(raw: bytes) -> bool:
    """A conservative pre-check: False only for mail that none of the three formats can be in. Most
    people's plain-text mail is cleared here without a MIME parse, when only the bytes are at hand."""
    lowered = raw.lower()
    return any(mark in lowered for mark in _REPORT_MARKS)


def report_type(report: MachineReport) -> str | None:
    """The specific abuse type (`csam`, `spam`, `phishing`…), lower case, whatever the format carried it in.

    Kept out of `MachineReport` because only XARF and X-ARF have a type distinct from the category; ARF's
    Feedback-Type is already the category.
    """
    fields = report.fields
    if report.format == "xarf":
        if isinstance(fields.get("type"), str):
            return str(fields["type"]).strip().lower() or None
        inner = fields.get("Report")
        if isinstance(inner, dict) and isinstance(inner.get("ReportType"), str):
            return inner["ReportType"].strip().lower() or None
        return None
    if report.format == "x-arf":
        value = fields.get("report-type")
        return (value.strip().lower() or None) if isinstance(value, str) else None
    return report.category


def is_csam(report: MachineReport) -> bool:
    """Whether the report is about child sexual abuse material, which the desk must route differently.

    XARF v4 says `category: content, type: csam`; v3 said `ReportType: ChildAbuse`; X-ARF producers used a
    Report-Type or Category naming child abuse. One predicate keeps that knowledge in one place.
    """
    kind = report_type(report)
    if kind in _CSAM_TYPES:
        return True
    return (report.category or "").lower() in _CSAM_TYPES


# --- MIME helpers -----------------------------------------------------------------------------------------


def _part_bytes(part: Message) -> bytes:
    """The decoded body of a leaf, whether the parser kept it as text or as a sub-message.

    The stdlib parses every message/* body as a nested message, so message/feedback-report arrives as a
    Message whose "headers" are the report fields, and a base64 one (not allowed by RFC 2046 §5.2.4 but sent
    by real reporters) as an empty-headed message whose body is base64. Re-serialising and then decoding the
    transfer encoding gives one shape for both.
    """
    try:
        payload = part.get_payload()
        if not isinstance(payload, list):
            decoded = part.get_payload(decode=True)
            return decoded if isinstance(decoded, bytes) else b""
        buf = BytesIO()
        for sub in payload:
            if isinstance(sub, Message):
                # compat32 writes each header as it arrived and never calls the (slow) header registry.
                BytesGenerator(buf, mangle_from_=False, maxheaderlen=0, policy=policy.compat32).flatten(sub)
        data = buf.getvalue()
        cte = (raw_header(part, "Content-Transfer-Encoding") or "").strip().lower()
        if cte == "base64":
            return base64.b64decode(data, validate=False)
        if cte == "quoted-printable":
            return quopri.decodestring(data)
        return data
    except Exception:
        return b""


def _text(data: bytes) -> str:
    """Bytes as text: report fields are ASCII or UTF-8 (RFC 6532); anything else is most likely Latin-1."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _header_block(text: str) -> list[tuple[str, str]]:
    """`Name: value` fields of one header block, unfolded (RFC 5322 §2.2.3), up to the first blank line.

    Used for the feedback-report fields (RFC 5965 §3.1 uses header syntax) and the original message headers.
    Leading blank lines are skipped: re-serialising an empty-headed sub-message produces one.
    """
    fields: list[tuple[str, str]] = []
    for line in _LINE_BREAK.split(text):
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t":
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        match = _FIELD_LINE.match(line)
        if match:
            fields.append((match.group(1), match.group(2).strip()))
    return fields


def _decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded, so original headers read like ParsedMessage.headers."""
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:
        return ""
    return str(name).strip().lower() if isinstance(name, str) else ""


def _original_headers(leaves: list[Message], after: int) -> tuple[tuple[str, str], ...]:
    """Headers of the reported message: the first original-message part after the report part, else any."""
    order = [*range(after + 1, len(leaves)), *range(0, after + 1)]
    for index in order:
        if leaves[index].get_content_type() in _ORIGINAL_TYPES:
            block = _header_block(_text(_part_bytes(leaves[index])))
            return tuple((name, _decode_words(value)) for name, value in block)
    return ()


# --- value normalisation ----------------------------------------------------------------------------------


def _ip(value: object) -> str | None:
    """A canonical IP address from `1.2.3.4`, `[1.2.3.4]`, `IPv6:…` or `1.2.3.4 (comment)`, else None."""
    if not isinstance(value, str):
        return None
    words = value.strip().split()
    if not words:
        return None
    candidate = words[0].strip("[]<>;,")
    if candidate.lower().startswith("ipv6:"):
        candidate = candidate[5:]  # RFC 5321 §4.1.3 address literal
    try:
        return ipaddress.ip_address(candidate).compressed
    except ValueError:
        return None


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _domain(value: str) -> str:
    return value.strip().strip("<>").rstrip(".").lower()


def _url(value: str) -> str:
    return value.strip().strip("<>").strip()


def _str_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


# --- ARF (RFC 5965, RFC 6591) -----------------------------------------------------------------------------


def _report_type(msg: Message) -> str:
    try:
        value = msg.get_param("report-type")
    except Exception:
        return ""
    return value.strip().lower() if isinstance(value, str) else ""


def _arf_fields(pairs: list[tuple[str, str]]) -> dict[str, object]:
    """Fields by lower-case name. Repeatable ones (RFC 5965 §3.2) are always lists so consumers need no
    type check; other fields become lists only when a sender repeated them, so no evidence is dropped.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    return {
        key: values if key in _ARF_REPEATABLE or len(values) > 1 else values[0]
        for key, values in grouped.items()
    }


def _parse_arf(msg: Message, leaves: list[Message]) -> MachineReport | None:
    """ARF is recognised by its message/feedback-report part (RFC 5965 §2 (b)), not only by report-type:
    some reporters (Netease's DMARC failure reports) send it inside multipart/mixed.
    """
    index = next((i for i, p in enumerate(leaves) if p.get_content_type() == "message/feedback-report"), None)
    declared = msg.get_content_type() == "multipart/report" and _report_type(msg) == "feedback-report"
    if index is None and declared:
        # Mislabelled second part: accept any leaf whose header block starts with Feedback-Type (§3.1).
        for i, part in enumerate(leaves):
            block = _header_block(_text(_part_bytes(part)))
            if block and block[0][0].lower() == "feedback-type":
                index = i
                break
    if index is None:
        return None
    fields = _arf_fields(_header_block(_text(_part_bytes(leaves[index]))))
    feedback_type = fields.get("feedback-type")
    category = None
    if isinstance(feedback_type, str):
        token = _TOKEN.match(feedback_type.strip())
        category = token.group(0).lower() if token else None
    return MachineReport(
        format="arf",
        category=category,
        fields=fields,
        source_ip=next(filter(None, map(_ip, _str_list(fields.get("source-ip")))), None),
        domains=_unique([_domain(v) for v in _str_list(fields.get("reported-domain"))]),
        urls=_unique([_url(v) for v in _str_list(fields.get("reported-uri"))]),
        original_headers=_original_headers(leaves, index),
    )


# --- X-ARF 0.2 (YAML) -------------------------------------------------------------------------------------


def _yaml_scalar(text: str) -> str | None:
    """One flat YAML scalar: quotes removed, `~`/`null`/empty as None, everything else a string.

    Deliberately no type coercion (`Port: 22` stays "22"): the desk shows values and does not compute with
    them, and YAML 1.1's implicit typing (`no` → False, `010` → 8) would corrupt evidence.
    """
    value = text.strip()
    if value.startswith('"'):
        end = value.rfind('"')
        if end > 0:
            try:
                decoded = json.loads(value[: end + 1])  # YAML double-quoted escapes are a superset of JSON's
                return decoded if isinstance(decoded, str) else value[1:end]
            except ValueError:
                return value[1:end]
        return value[1:]
    if value.startswith("'"):
        end = value.rfind("'")
        inner = value[1:end] if end > 0 else value[1:]
        return inner.replace("''", "'")
    value = re.split(r"[ \t]#", value, maxsplit=1)[0].rstrip()  # YAML comments need whitespace before '#'
    if value in ("", "~", "null", "Null", "NULL"):
        return None
    return value


def _flat_yaml(text: str) -> dict[str, str | None]:
    """A safe parser for the flat `Key: value` YAML of X-ARF 0.2 reports (PyYAML is not a dependency).

    Anything richer than a flat mapping (sequences, nested maps, anchors, tags) is skipped rather than
    interpreted; indented lines continue the previous plain scalar, as YAML folds them with a space.
    """
    out: dict[str, str | None] = {}
    last: str | None = None
    for line in _LINE_BREAK.split(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        if line[0] in " \t":
            if last is not None and isinstance(out.get(last), str) and not stripped.startswith("- "):
                out[last] = f"{out[last]} {stripped}"
            continue
        match = _YAML_LINE.match(line.rstrip())
        if not match:
            last = None
            continue
        last = match.group(1).lower()
        out[last] = _yaml_scalar(match.group(2) or "")
    return out


def _looks_like_x_arf(fields: dict[str, str | None]) -> bool:
    return bool(fields.get("reported-from") or fields.get("category") or fields.get("report-type"))


def _x_arf_yaml(leaves: list[Message]) -> dict[str, str | None] | None:
    """The YAML part: named `report.txt` first, then the 2nd part (the X-ARF 0.2 layout), then any text part,
    because producers disagree on the name but all of them put the YAML in a text part.
    """
    named = [p for p in leaves if _filename(p) == "report.txt"]
    second = [leaves[1]] if len(leaves) > 1 else []
    texts = [p for p in leaves if p.get_content_maintype() == "text"]
    for part in [*named, *second, *texts]:
        fields = _flat_yaml(_text(_part_bytes(part)))
        if _looks_like_x_arf(fields):
            return fields
    return None


def _parse_x_arf(msg: Message, leaves: list[Message]) -> MachineReport | None:
    """X-ARF announces itself with `X-ARF: YES` (x-arf.org 0.2, "Mail header"); without it we do not guess,
    since flat `Key: value` text is common in mail people write.
    """
    if (raw_header(msg, "X-ARF") or "").strip().lower() != "yes":
        return None
    fields = _x_arf_yaml(leaves)
    if fields is None:
        return None
    source = fields.get("source") or ""
    source_type = (fields.get("source-type") or "").strip().lower()
    source_ip = _ip(source)  # Source-Type ipv4/ipv6 says so, but a bare IP under another type is one too
    urls = [_url(source)] if source_type in ("uri", "url") else []
    domains = [_domain(source)] if source_type in ("domain", "hostname", "fqdn") else []
    category = (fields.get("category") or "").strip().lower() or None
    report_index = next((i for i, p in enumerate(leaves) if _filename(p) == "report.txt"), 1)
    return MachineReport(
        format="x-arf",
        category=category,
        fields=dict(fields),
        source_ip=source_ip,
        domains=_unique(domains),
        urls=_unique(urls),
        original_headers=_original_headers(leaves, min(report_index, len(leaves) - 1)),
    )


# --- XARF v3 / v4 (JSON) ----------------------------------------------------------------------------------

# Structural validation only: the keys a consumer needs to act. Full schema validation is the reporter's job.
_V4_REQUIRED: dict[str, type] = {
    "xarf_version": str,
    "category": str,
    "type": str,
    "reporter": dict,
    "source_identifier": str,
}


def _is_v4(obj: dict[str, object]) -> bool:
    if not all(isinstance(obj.get(key), kind) for key, kind in _V4_REQUIRED.items()):
        return False
    return str(obj["xarf_version"]).strip().startswith("4")


def _is_v3(obj: dict[str, object]) -> bool:
    report = obj.get("Report")
    if not isinstance(obj.get("ReporterInfo"), dict) or not isinstance(report, dict):
        return False
    return any(isinstance(report.get(key), str) for key in ("ReportType", "ReportClass", "Category"))


def _v4_report(obj: dict[str, object]) -> MachineReport:
    source = str(obj["source_identifier"]).strip()
    source_ip = _ip(source)
    urls = _str_list(obj.get("url"))
    domains: list[str] = []
    if source_ip is None and "://" in source:
        urls.insert(0, source)
    elif source_ip is None and "." in source and " " not in source:
        domains.append(source)
    return MachineReport(
        format="xarf",
        category=str(obj["category"]).strip().lower() or None,
        fields=obj,
        source_ip=source_ip,
        domains=_unique([_domain(d) for d in domains]),
        urls=_unique([_url(u) for u in urls]),
    )


def _v3_report(obj: dict[str, object]) -> MachineReport:
    """v3 has no v4-style category: its Category, else ReportClass (`Content`, `Activity`), lower-cased,
    is the closest thing; the specific ReportType stays in fields for `report_type()`.
    """
    report = obj["Report"] if isinstance(obj.get("Report"), dict) else {}
    category = next((report[k] for k in ("Category", "ReportClass") if isinstance(report.get(k), str)), None)
    source = report.get("Source")
    source_ip = _ip(report.get("SourceIp")) or _ip(source)
    if source_ip is None and isinstance(source, dict):
        source_ip = _ip(source.get("IP"))
    urls = _str_list(report.get("SourceUrl")) + _str_list(report.get("Url"))
    source_type = str(report.get("SourceType", "")).lower()
    if isinstance(source, str) and source_type in ("uri", "url"):
        urls.append(source)
    return MachineReport(
        format="xarf",
        category=(category.strip().lower() or None) if category else None,
        fields=obj,
        source_ip=source_ip,
        urls=_unique([_url(u) for u in urls]),
    )


def _json_candidate(part: Message) -> bool:
    """JSON parts by type or name, and plain-text bodies that are nothing but a JSON object."""
    ctype = part.get_content_type()
    if ctype in ("application/json", "text/json", "text/plain"):
        return True
    return _filename(part).endswith(".json")


# An unencoded body that is a JSON object starts with "{", after white space and perhaps a UTF-8 BOM (which
# the parser carries as surrogates). Checked on the parsed text, so a 2 KB report is not decoded to be read.
_JSON_START = re.compile(r"\s*(?:\udcef\udcbb\udcbf|\ufeff)?\s*\{")


def _cannot_be_json(part: Message) -> bool:
    payload = part.get_payload()
    if not isinstance(payload, str):
        return False
    cte = (raw_header(part, "Content-Transfer-Encoding") or "").strip().lower()
    return cte in ("", "7bit", "8bit", "binary") and _JSON_START.match(payload) is None  # others: decode


def _parse_xarf_json(leaves: list[Message]) -> MachineReport | None:
    for part in leaves:
        if not _json_candidate(part) or _cannot_be_json(part):
            continue
        data = _part_bytes(part).lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()  # a UTF-8 BOM is common
        if len(data) > _MAX_JSON or not data.startswith(b"{"):
            continue
        try:
            obj = json.loads(_text(data))
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict) and _is_v4(obj):
            return _v4_report(obj)
        if isinstance(obj, dict) and _is_v3(obj):
            return _v3_report(obj)
    return None


# --- Hotmail / Outlook.com JMRP ---------------------------------------------------------------------------


_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.]{3,45})\]")


def _parse_jmrp(leaves: list[Message]) -> MachineReport | None:
    """Microsoft's Junk Mail Reporting Program sends no feedback-report part: the complained-about message
    comes back as message/rfc822 with `X-HmXmrOriginalRecipient` (the complaining mailbox) added to its
    headers. Only that header makes it JMRP: a person attaching a message as evidence has none.
    """
    for index, part in enumerate(leaves):
        if part.get_content_type() != "message/rfc822":
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        recipient = raw_header(inner, "X-HmXmrOriginalRecipient") if isinstance(inner, Message) else None
        if recipient is None:
            continue
        headers = _original_headers(leaves, index - 1)
        fields: dict[str, object] = {
            "feedback-type": "abuse",
            "original-rcpt-to": recipient.strip(),
        }
        # The sending IP: the bracketed client address of the topmost Received, which Hotmail wrote.
        received = next((v for n, v in headers if n.lower() == "received"), "")
        source = next(filter(None, map(_ip, _BRACKETED.findall(received))), None)
        return MachineReport(
            format="jmrp",
            category="abuse",
            fields=fields,
            source_ip=source,
            original_headers=headers,
        )
    return None
