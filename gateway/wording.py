"""The desk's words for the gateway's codes: how a message was threaded, why it got its kind.

Why a module: `cases show` and the web desk must say the same thing, in words a new analyst understands
without reading the source ("joined by the case ID in the subject", not "via subject"). Only codes the
gateway itself wrote go through here; nothing a sender wrote is interpolated unescaped.
"""

from __future__ import annotations

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
