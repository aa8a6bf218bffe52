"""Per-message preparation: the pure stages between an inbox entry and what the case transaction stores.

Parse, bound, classify, find forwards and machine reports, escape (defang), collect indicators: bytes in,
a `PreparedMessage` out, no store, no network, no clock. Its own module so that every caller takes it from
one place without importing the others: the intake worker's thread (gateway/intake.py), the killable
preparation child (gateway/preparer.py, which must not import the worker that owns it) and the CLI's
`reprocess` and split re-indexing (gateway/cli/). Imports nothing of gateway/.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from parsers.auto import classify
from parsers.bounce import embedded_texts, returned_message_ids
from parsers.content_hashes import content_hashes
from parsers.defang import defang
from parsers.escape import escape_text
from parsers.forward import ForwardedMessage, forwarded_messages
from parsers.indicators import extract_indicators, indicator_host
from parsers.message import ParseLimits, parse_message
from parsers.mime import parse_tree
from parsers.reports import is_csam, parse_machine_report
from parsers.types import Indicator, MachineReport, ParsedMessage
from storage.records import ClaimedEntry, PreparedMessage

ParseFn = Callable[[bytes], ParsedMessage]
_KIND = {"person": "report", "machine_report": "machine_report", "automatic": "automatic"}
# Inbound headers that imitate ours are evidence of an attempt, never a signal (issue 7).
_OUR_HEADER_PREFIX = "x-abuse-gateway-"


def default_parser(limits: ParseLimits | None = None) -> ParseFn:
    if limits is None:
        return parse_message
    return lambda raw: parse_message(raw, limits)


def _display(value: object) -> object:
    """Report fields are shown to people: every string in them escaped, however deeply nested."""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, dict):
        return {str(k): _display(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_display(v) for v in value]
    return value


def _report_fields(report: MachineReport) -> dict[str, object]:
    """The report as the desk sees it (escaped); the refanged values live on as indicators."""
    return {
        "format": report.format,
        "category": report.category,
        "source_ip": _display(report.source_ip),
        "domains": _display(list(report.domains)),
        "urls": _display(list(report.urls)),
        "fields": _display(report.fields),
        "original_headers": _display([list(pair) for pair in report.original_headers]),
    }


def _indicators(
    first: Sequence[Indicator],
    parsed: ParsedMessage,
    report: MachineReport | None,
    forwards: tuple[ForwardedMessage, ...] = (),
) -> tuple[tuple[Indicator, str | None], ...]:
    """`first` (from the subject and text, found while escaping them), then the rest, deduplicated."""
    texts = list(parsed.html_links)
    for forward in forwards:
        texts += [forward.subject, forward.text, forward.sender_ip or ""]
    if report is not None:
        texts += [*report.urls, *report.domains, report.source_ip or ""]
    found: dict[Indicator, None] = dict.fromkeys(first)
    for text in texts:
        if text:
            for indicator in extract_indicators(text):
                found.setdefault(indicator)
    return tuple((i, indicator_host(i)) for i in found)


def _group_key(report: MachineReport | None) -> str | None:
    if report is None:
        return None
    source = report.source_ip or (report.domains[0] if report.domains else None)
    if not source:
        return None
    return f"{report.category or 'unknown'}|{source.lower()}"


def _evidence(forward: ForwardedMessage) -> dict[str, object]:
    return {
        "source": forward.source,
        "from": _display(forward.from_addr),
        "subject": _display(forward.subject),
        "date": forward.date,
        "message_id": forward.message_id,
        "sender_ip": _display(forward.sender_ip),
        "received": _display([dict(hop) for hop in forward.received]),
        "text": _display(forward.text),
        "defects": list(forward.defects),
    }


_INLINE_FORWARD_HINT = (
    "forwarded message",
    "original message",
    "begin forwarded",
    "weitergeleitete",
    "ursprüngliche nachricht",
    "message transféré",
    "mensaje reenviado",
)


def _may_forward(parsed: ParsedMessage) -> bool:
    """Cheap pre-check so the forward parser (and mail-parser) only runs where a forward can be."""
    if any(a.content_type == "message/rfc822" for a in parsed.attachments):
        return True
    head = parsed.text[:200_000].lower()
    return any(hint in head for hint in _INLINE_FORWARD_HINT)


def _has_embedded_message(parsed: ParsedMessage) -> bool:
    return any(a.content_type in ("message/rfc822", "text/rfc822-headers") for a in parsed.attachments)


# Decoded text beyond this is not escaped, defanged or searched for indicators (issue 15: 24 MB of
# `http://a.` took 73 s and 1.8 GB); the raw bytes keep all of it, and a defect says it was cut.
DEFAULT_MAX_TEXT = 1024 * 1024


def _bounded(parsed: ParsedMessage, max_text: int) -> ParsedMessage:
    if len(parsed.text) <= max_text:
        return parsed
    return dataclasses.replace(
        parsed,
        text=parsed.text[:max_text],
        defects=(*parsed.defects, f"text_truncated: {len(parsed.text)} chars, {max_text} kept"),
    )


def prepare(
    entry: ClaimedEntry, parse: ParseFn = parse_message, max_text: int = DEFAULT_MAX_TEXT
) -> PreparedMessage:
    """The pure stages for one entry. May raise only if `parse` (a test hook, a future parser) does.

    The raw bytes are MIME-parsed once (issue 18): every parser below reads that tree. A `parse` hook other
    than the stock parser is given the bytes, as its signature says.
    """
    tree = parse_tree(entry.raw)
    parsed = _bounded(parse_message(tree) if parse is parse_message else parse(entry.raw), max_text)
    report = parse_machine_report(tree)
    classification = classify(parsed, entry.mail_from, report)
    # A JMRP complaint is the complained-about message itself: it is the evidence, as a person's forward is.
    takes_forwards = report is None or report.format == "jmrp"
    forwards = forwarded_messages(tree, parsed.text) if takes_forwards and _may_forward(parsed) else ()
    flags = []
    if any(name.lower().startswith(_OUR_HEADER_PREFIX) for name, _ in parsed.headers):
        flags.append("untrusted_gateway_headers")
    subject, text = defang(parsed.subject), defang(parsed.text)
    # Hashed here, in the bounded child (a hostile image can only kill it); matched in the worker (issue 19).
    hashes = content_hashes(tree) if parsed.attachments else None
    return PreparedMessage(
        entry=entry,
        parsed=parsed,
        kind=_KIND[classification.kind],
        kind_rule=classification.rule,
        escaped_subject=subject.escaped,
        escaped_text=text.escaped,
        escaped_filenames=tuple(
            escape_text(a.filename) if a.filename else a.filename for a in parsed.attachments
        ),
        indicators=_indicators(subject.indicators + text.indicators, parsed, report, forwards),
        report=_report_fields(report) if report is not None else None,
        defects=(*parsed.defects, *hashes.defects) if hashes else parsed.defects,
        flags=tuple(flags),
        group_key=_group_key(report),
        returned_message_ids=returned_message_ids(tree) if classification.kind == "automatic" else (),
        embedded_texts=embedded_texts(tree) if _has_embedded_message(parsed) else (),
        evidence=tuple(_evidence(f) for f in forwards),
        csam=report is not None and is_csam(report),
        content_hashes=hashes,
    )
