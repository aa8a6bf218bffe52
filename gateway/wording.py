"""The desk's words for the gateway's codes: how a message was threaded, why it got its kind.

Why a module: `cases show` and the web desk must say the same thing, in words a new analyst understands
without reading the source ("joined by the case ID in the subject", not "via subject"). Only codes the
gateway itself wrote go through here; nothing a sender wrote is interpolated unescaped.
"""

from __future__ import annotations

from typing import Any

_SIGNALS = {
    "token": "joined by the signed reply address",
    "header": "joined by In-Reply-To/References naming a message of the case",
    "subject": "joined by the case ID in the subject",
    "body": "joined by the case ID in the text",
}

_RULE_PREFIXES = {
    "dsn:": "a bounce (delivery status notification)",
    "mdn:": "a read receipt (message disposition notification)",
    "report:": "a machine report",
    "auto-submitted:": "automatic mail (Auto-Submitted header)",
    "precedence:": "automatic mail (Precedence header)",
    "challenge:": "a challenge-response robot",
    "exchange:": "automatic mail (an Exchange inbox rule)",
    "subject:ooo": "an out-of-office reply (by its subject)",
    "subject:challenge": "a challenge-response robot (by its subject)",
    "arf": "a machine report (ARF)",
    "xarf": "a machine report (X-ARF)",
}


def thread_words(signal: str, index: int, flags: list[str] | tuple[str, ...] = ()) -> str:
    """How the message came to be in its case."""
    if signal in _SIGNALS:
        return _SIGNALS[signal]
    if "grouped" in flags:
        return "joined a case of machine reports about the same source"
    if index == 1:
        return "opened a new case"
    return "moved here by the desk (merge or split)"


def rule_words(kind: str, rule: str) -> str:
    """Why the message has its kind, with the rule's code kept for whoever debugs it."""
    if kind in ("report", "amendment") and rule in ("", "person", "default"):
        return "written by a person"
    if rule == "processing_failed":
        return "could not be processed (raw bytes kept; `reprocess --failed` tries again)"
    for prefix, words in _RULE_PREFIXES.items():
        if rule.startswith(prefix):
            return f"{words} [{rule}]"
    return f"{kind} [{rule}]" if rule else kind


_MARK_SOURCES = {
    "desk": "marked by the desk",
    "machine_report": "a machine report classifies it as CSAM",
}


def mark_source_words(source: str) -> str:
    """Where a CSAM mark or signal came from, in words, the code kept for whoever debugs it."""
    if source in _MARK_SOURCES:
        return _MARK_SOURCES[source]
    if source.startswith("terms:"):
        language = source.partition(":")[2] or "?"
        return f"the report's wording matches the CSAM term list ({language}) [{source}]"
    if source.startswith("hash_match:"):
        parts = source.split(":")
        label, alg = (parts[1] if len(parts) > 1 else "?"), (parts[2] if len(parts) > 2 else "?")
        distance = f" at distance {parts[3]}" if len(parts) > 3 and parts[3] not in ("", "0") else ""
        return f"an attachment matches hash list {label} ({alg}{distance}) [{source}]"
    return source


def csam_words(view: dict[str, Any]) -> list[str]:
    """The compartment's lines of `cases show`: verdict or signal, where each came from, how long it is kept.
    Every value here was written by the gateway or an operator; the caller still escapes them."""
    lines: list[str] = []
    marks = view.get("csam_marks") or []
    hold = "legal hold: yes" if view.get("hold") else "legal hold: no"
    if not marks and not view.get("csam") and not view.get("preserve_until"):
        return [f"CSAM: no; {hold}"]
    active = [m for m in marks if not m.get("cleared")]
    if view.get("csam"):
        lines.append("CSAM: yes, confirmed — content only with --reason (every view is recorded)")
    elif view.get("possible_csam"):
        lines.append("CSAM: possibly (a signal, not a verdict; confirm or clear with `cases csam`)")
    else:
        lines.append("CSAM: no")
    for m in active:
        who = f" by {m['by']}" if m.get("by") else ""
        why = f": {m['reason']}" if m.get("reason") else ""
        what = "mark" if m["kind"] == "csam" else "signal"
        lines.append(f"  {what}: {mark_source_words(m['source'])}{who} {m['at']}{why}")
    for m in marks:
        if m.get("cleared"):
            c = m["cleared"]
            what = "mark" if m["kind"] == "csam" else "signal"
            lines.append(
                f"  cleared {what} ({mark_source_words(m['source'])}) by {c.get('by') or '-'} {c['at']}: "
                f"{c.get('reason') or '-'}"
            )
    until = view.get("preserve_until")
    kept = f"preserved until {until} (no purge removes it before)" if until else "no preservation"
    lines.append(f"{kept}; {hold}")
    return lines
