"""Message generators: wire-ready SMTP DATA payloads (CRLF, dot-stuffed, terminated) of a given size,
varied abuse reports for `ingest`, pathological inputs for the escaper."""

from __future__ import annotations

import random
import secrets
from email.utils import formatdate
from pathlib import Path

SENDER = "reporter{n}@reporter.example.net"
RECIPIENT = "abuse@example.org"

_WORDS = (
    "phishing page asks for card numbers please take it down hosted on your network since this morning "
    "the kit copies our login form and posts to a drop script we saw it in a campaign against customers "
    "Username: bob Password: x:y at 10:30 version 1.2.3 see C:\\Temp\\invoice.pdf node.js e.g. thanks"
).split()
_TLDS = ("example", "test", "com", "net", "org", "zip", "ru", "io")


def _url(rng: random.Random) -> str:
    label = rng.choice(["login", "secure", "verify", "cdn", "www"])
    host = f"{label}-{rng.randrange(10_000)}.bad{rng.randrange(500)}"
    path = rng.choice(["verify", "x", "wp-admin/a.php", "index.html"])
    return f"https://{host}.{rng.choice(_TLDS)}/{path}?id={rng.randrange(10**6)}"


def body_text(rng: random.Random, size: int) -> str:
    """Plain-text body of about `size` bytes: prose lines, a URL every few lines, an IP, an address."""
    lines: list[str] = []
    total = 0
    n = 0
    while total < size:
        n += 1
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(6, 12)))
        if n % 4 == 0:
            words += " " + _url(rng)
        elif n % 7 == 0:
            words += f" from 198.51.100.{rng.randrange(1, 255)} contact admin@bad{rng.randrange(99)}.example"
        lines.append(words)
        total += len(words) + 2
    return "\r\n".join(lines)


def report(
    rng: random.Random,
    size: int,
    *,
    n: int = 0,
    subject: str | None = None,
    in_reply_to: str | None = None,
) -> bytes:
    """One RFC 5322 report (CRLF line ends, not dot-stuffed) of about `size` bytes."""
    token = secrets.token_hex(8)
    headers = [
        f"From: Reporter {n} <{SENDER.format(n=n % 997)}>",
        f"To: {RECIPIENT}",
        f"Subject: {subject or 'Phishing at ' + _url(rng).split('/')[2]}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: <bench.{token}.{n}@reporter.example.net>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    if in_reply_to:
        headers += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    head = "\r\n".join(headers) + "\r\n\r\n"
    return (head + body_text(rng, max(size - len(head), 64)) + "\r\n").encode()


def wire(message: bytes) -> bytes:
    """DATA payload: dot-stuffed, ending with the terminating CRLF.CRLF."""
    lines = message.split(b"\r\n")
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def payloads(size: int, count: int = 16, seed: int = 1) -> list[bytes]:
    """A few distinct wire payloads of `size` bytes (distinct Message-IDs so threading sees new reports)."""
    rng = random.Random(seed)
    return [wire(report(rng, size, n=i)) for i in range(count)]


def write_ingest_dir(directory: Path, count: int, seed: int = 7) -> None:
    """`count` varied ~2 KB reports as .eml files; about one in five replies to an earlier one (by
    In-Reply-To or by a case-ID-looking subject), so threading lookups run too."""
    from parsers.case_ref import new_case_id

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    earlier: list[str] = []
    for i in range(count):
        subject = in_reply_to = None
        roll = rng.random()
        if earlier and roll < 0.1:
            in_reply_to = rng.choice(earlier)
            subject = "Re: more detail on my report"
        elif roll < 0.2:
            # A well-formed case ID (check character valid) that may or may not exist: a reply or a guess.
            subject = f"AW: [{new_case_id('ABU')}] We received your report"
        raw = report(rng, rng.randrange(1500, 2600), n=i, subject=subject, in_reply_to=in_reply_to)
        mid = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
        earlier.append(mid)
        (directory / f"{i:06d}.eml").write_bytes(raw)


def pathological(size: int = 1_000_000) -> dict[str, str]:
    """Inputs that make naive URL scanners go quadratic."""

    def rep(unit: str) -> str:
        return (unit * (size // len(unit) + 1))[:size]

    return {
        "a. x500k": rep("a."),
        "http:// repeated": rep("http://"),
        "dots": rep("."),
        "@ repeated": rep("@"),
        "a@ repeated": rep("a@"),
        "http://a. repeated": rep("http://a."),
        "no spaces url": "http://" + rep("a.b/")[: size - 7],
        "mixed words": rep("see https://bad.example/x?u=a@b.c and 10.0.0.1 "),
    }
