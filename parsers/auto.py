"""Who wrote this mail: a person, a reporting machine, or an automaton that must never be answered.

The cost of a mistake is asymmetric. Answering an automaton risks a mail loop (RFC 3834 §1) and a useless
case; treating a person as an automaton costs them a confirmation. So the automatic rules use signals that
machines set and people's mail clients do not, and the subject rules are anchored and narrow: abuse@ receives
phishing forwards whose subjects ("Please verify your email address") read exactly like machine mail.

Decisions worth knowing:

* `X-Auto-Response-Suppress` does not make a mail automatic. Exchange sets it on its own auto-generated mail,
  but Outlook and bulk senders also set it on mail people write, meaning "do not auto-reply to me". It is a
  request to the confirmation sender, so it is reported by `auto_reply_suppressed()`, not by `classify()`.
* A `postmaster` sender alone is not a bounce: postmasters are people who file abuse reports.
  `MAILER-DAEMON` and the null address `<>` (in MAIL FROM, Return-Path or From) are never a person. A
  delivery-failure subject is (anchored, so a person's "Fwd:" of a bounce-themed lure keeps its confirmation).
* Any `multipart/report` (RFC 6522) that is not a readable abuse report is automatic: mail clients do not
  compose that type, only MTAs and reporting software do (DSN, MDN, TLS-RPT, broken ARF).
"""

from __future__ import annotations

import re

from parsers.types import Classification, MachineReport, ParsedMessage

_RULE_BY_FORMAT = {"arf": "arf", "x-arf": "x-arf", "xarf": "xarf-json"}

# Localised out-of-office / auto-reply subjects, anchored at the start (after an optional "[tag]" a gateway
# may prepend) so "Fwd: Out of office spam" from a person does not match.
_OOO_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:"
    r"auto(?:matic)?[- ]?(?:reply|response)\b"  # Exchange "Automatic reply:", "Auto-Reply:", "Autoreply:"
    r"|out of (?:the )?office\b"
    r"|abwesenheitsnotiz\b|automatische antwort\b"  # de
    r"|r[ée]ponse automatique\b|r[ée]ponse en cas d'absence\b"  # fr
    r"|respuesta autom[áa]tica\b"  # es
    r"|risposta automatica\b"  # it
    r"|resposta autom[áa]tica\b"  # pt
    r"|automatisch antwoord\b"  # nl
    r"|automatiskt? svar\b"  # sv, da, no
    r"|odpowied[źz] automatyczna\b"  # pl
    r"|автоответ|автоматический ответ"  # ru
    r"|自动回复|自動回覆|自動応答"  # zh, ja
    r")",
    re.IGNORECASE,
)
# TMDA's confirmation request subject; kept this narrow on purpose (see module docstring).
_CHALLENGE_SUBJECT = re.compile(r"^\s*(?:please confirm your (?:message|e-?mail)\b|\[ask\]\s)", re.IGNORECASE)
# Delivery-failure subjects, anchored like the others (after an optional "[tag]"), so "Fwd: Mail could not be
# delivered" from a person forwarding a phishing lure does not match. Alone they make a mail automatic: many
# gateways (Trend IMSS, Symantec, McAfee, GroupWise, Domino) bounce from an ordinary-looking address with
# nothing but this subject, and a person loses only a confirmation if one of them matches by accident.
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:"
    r"undeliverable|undelivered mail|delivery status notification|delivery (?:has )?fail|"
    r"(?:e-?mail |message |permanent )?delivery failure|failure (?:notice|delivery)|"
    r"returned mail|mail (?:system )?error\b|mail delivery (?:failed|failure|problem|warning)|"
    r"mail (?:could not be|not) delivered|failed mail\b|mail failed\b|non[- ]delivery\b|"
    r"delivery report\b|delivery notification: delivery has failed|"
    r"warning: message (?:has not yet been delivered|\S+ delayed|delayed)|message delayed\b|"
    r"delayed mail\b|automatically rejected mail|your message to \S+ could not be delivered|"
    r"non remis|unzustellbar|nicht zustellbar|message not delivered|non recapitabile|"
    r"no se puede entregar|utilisateur non recens|"
    r"ваше сообщение не доставлено|недоставленное сообщение|"  # ru
    r"メッセージを配信できません|配信不能|未送達|"  # ja (Exchange, Gmail, Yahoo! JAPAN)
    r"退信|无法投递|邮件投递失败"  # zh
    r")",
    re.IGNORECASE,
)
_REPORT_TYPE = re.compile(r"""(?:^|;)\s*report-type\s*=\s*"?([^";\s]*)""", re.IGNORECASE)
_TOKEN = re.compile(r"\s*([A-Za-z0-9_-]+)")
# MDaemon (Alt-N) bounces from its own name; no person is called that.
_MAILER_DAEMON = frozenset({"mailer-daemon", "mailer_daemon", "mailerdaemon", "mdaemon"})
# Challenge-response systems: TMDA, ASK (Active Spam Killer), cPanel BoxTrapper, Spam Arrest.
_CHALLENGE_HEADERS = ("x-challenge", "x-askversion", "x-boxtrapper", "x-spamarrest-noautoreply")
_FALSY = frozenset({"no", "false", "0", "off"})


def classify(
    parsed: ParsedMessage, envelope_sender: str | None, report: MachineReport | None
) -> Classification:
    """Person, machine report or automatic mail, with the rule that decided.

    The machine report wins before any automatic rule: reporters mark ARF with `Auto-Submitted:
    auto-generated` (RFC 5965 §2 allows it), and a report is exactly what abuse@ exists to receive.
    `envelope_sender` is the SMTP MAIL FROM ("" or "<>" for the null sender), None when unknown.
    """
    if report is not None:
        return Classification("machine_report", _RULE_BY_FORMAT.get(report.format, report.format))
    for rule in (_report_rule, _dsn_rule, _auto_header_rule, _subject_rule):
        fired = rule(parsed, envelope_sender)
        if fired is not None:
            return Classification("automatic", fired)
    return Classification("person", "default")


def is_bulk_or_list(parsed: ParsedMessage) -> str | None:
    """Why this mail must not get an automatic answer as bulk or list mail (RFC 3834 §2), else None.

    Kept apart from `classify()` because a person can write through a list: the case is still opened, only the
    confirmation is withheld.
    """
    precedence = (parsed.header("Precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"precedence:{precedence}"
    if parsed.header("List-Id") is not None:  # RFC 2919
        return "list-id"
    if parsed.header("List-Unsubscribe") is not None:  # RFC 2369
        return "list-unsubscribe"
    return None


def auto_reply_suppressed(parsed: ParsedMessage) -> str | None:
    """Why the sender asked not to be auto-answered, else None: bulk/list mail or Exchange's
    `X-Auto-Response-Suppress` naming auto-replies (`All`, `AutoReply`, `OOF`), which the confirmation
    sender should honour even on a person's mail.
    """
    reason = is_bulk_or_list(parsed)
    if reason is not None:
        return reason
    suppress = {v.strip().lower() for v in (parsed.header("X-Auto-Response-Suppress") or "").split(",")}
    if suppress & {"all", "autoreply", "oof"}:
        return "x-auto-response-suppress"
    return None


# --- rules: each returns the rule name that fired, or None -------------------------------------------------


def _local_part(address: str | None) -> str:
    if not address:
        return ""
    bare = address.strip().strip("<>").strip()
    return (bare.rpartition("@")[0] if "@" in bare else bare).lower()


def _full_content_type(parsed: ParsedMessage) -> str:
    return parsed.header("Content-Type") or ""


def _report_rule(parsed: ParsedMessage, envelope_sender: str | None) -> str | None:
    """multipart/report (RFC 6522): DSN (RFC 3464), MDN (RFC 8098), or any other report type."""
    if parsed.content_type != "multipart/report":
        return None
    match = _REPORT_TYPE.search(_full_content_type(parsed))
    report_type = match.group(1).lower() if match and match.group(1) else ""
    if report_type == "delivery-status":
        return "dsn:report-type"
    if report_type == "disposition-notification":
        return "mdn:report-type"
    return f"report:{report_type or 'unknown'}"


def _dsn_rule(parsed: ParsedMessage, envelope_sender: str | None) -> str | None:
    """Bounces that are not multipart/report: qmail, old Exim and Exchange NDRs in plain text."""
    if parsed.header("X-Failed-Recipients") is not None:  # Exim
        return "dsn:x-failed-recipients"
    if envelope_sender is not None and envelope_sender.strip() in ("", "<>"):  # RFC 5321 §4.5.5
        return "dsn:null-sender"
    return_path = parsed.header("Return-Path")
    if return_path is not None and return_path.strip() in ("<>", ""):  # the null sender, recorded at delivery
        return "dsn:null-return-path"
    # `From: <>` / `From: MAILER-DAEMON <>` (DragonFly dma, McAfee, Jetmail): the parser gives the empty
    # address, which no person can write from and no confirmation can reach.
    if parsed.from_addr == "":
        return "dsn:null-from"
    senders = (envelope_sender, parsed.from_addr, return_path)
    if any(_local_part(address) in _MAILER_DAEMON for address in senders):
        return "dsn:mailer-daemon"
    if _BOUNCE_SUBJECT.match(parsed.subject or ""):
        if "postmaster" in (_local_part(envelope_sender), _local_part(parsed.from_addr)):
            return "dsn:postmaster"
        if parsed.from_addr is None or _is_system_name(_local_part(parsed.from_addr)):
            return "subject:bounce"
    return None


# Words of the mailbox names gateways bounce from (Symantec_AntiVirus_for_SMTP_Gateways@, E500_SMTP_Mail_
# Service@, ndr@, admin@, inetgw1@). With a delivery-failure subject they make a bounce; a person's own
# address ("a@b.example") with that subject stays a person (see the module docstring).
_SYSTEM_WORDS = frozenset(
    {
        "admin",
        "administrator",
        "antivirus",
        "bounce",
        "bounces",
        "daemon",
        "gateway",
        "gateways",
        "imss",
        "mail",
        "mailer",
        "mta",
        "ndr",
        "notify",
        "postmaster",
        "root",
        "smtp",
        "system",
        "virus",
    }
)


def _is_system_name(local: str) -> bool:
    words = [w.rstrip("0123456789") for w in re.split(r"[^a-z0-9]+", local) if w]
    return any(w in _SYSTEM_WORDS or w.endswith(("gw", "daemon")) for w in words)


def _auto_header_rule(parsed: ParsedMessage, envelope_sender: str | None) -> str | None:
    """Headers auto-responders and Exchange set on what they generate."""
    for value in parsed.header_all("Auto-Submitted"):  # RFC 3834 §5: anything but "no" is automatic
        token = _TOKEN.match(value)
        if token and token.group(1).lower() != "no":
            return f"auto-submitted:{token.group(1).lower()}"
    if (parsed.header("Precedence") or "").strip().lower() == "auto_reply":
        return "precedence:auto_reply"
    for name in ("X-Autoreply", "X-Autorespond"):
        value = parsed.header(name)
        if value is not None and value.strip().lower() not in _FALSY:
            return name.lower()
    if parsed.header("X-MS-Exchange-Inbox-Rules-Loop") is not None:  # set when an inbox rule sent the mail
        return "exchange:inbox-rules-loop"
    for name in _CHALLENGE_HEADERS:
        if parsed.header(name) is not None:
            return f"challenge:{name}"
    for name, value in parsed.headers:
        lowered = name.lower()
        if lowered.startswith("x-tmda") or (lowered == "x-delivery-agent" and "tmda" in value.lower()):
            return "challenge:tmda"
    return None


def _subject_rule(parsed: ParsedMessage, envelope_sender: str | None) -> str | None:
    """Last resort for auto-responders that set no header at all (older Exchange and many web mailers)."""
    subject = parsed.subject or ""
    if _OOO_SUBJECT.match(subject):
        return "subject:ooo"
    if _CHALLENGE_SUBJECT.match(subject):
        return "subject:challenge"
    return None
