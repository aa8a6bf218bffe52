"""Mail out, signed (issue 22): DKIM (RFC 6376) with rsa-sha256 and, when configured, ed25519-sha256
(RFC 8463) side by side, on every message the gateway sends.

Why one place: since 2024 the large mailbox providers junk or reject mail that is not authenticated and
aligned, so an unsigned confirmation often never arrives. `Signer.sign` is called at the one point where
the outbox worker turns a message into the bytes it hands to the smarthost or writes as .eml
(`ConfirmWorker.outbound_bytes` in gateway/confirm.py), so a new kind of mail is signed without its author
doing anything, and the outbox row keeps exactly the signed bytes that went out.

The signed header set is fixed here (From, To, Subject, Date, Message-ID, In-Reply-To, References,
Reply-To, Auto-Submitted and the MIME headers), each signed even when absent so it cannot be added on
the way, and From twice (oversigned) so a second From cannot be prepended. Canonicalisation is
relaxed/relaxed: a smarthost that refolds a header does not break the signature.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config, ConfigError

SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Reply-To",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "From",  # oversigned: no second From may be added without breaking the signature
)


class DkimKeyError(ConfigError):
    """A [dkim] key file that cannot be read, is not a key, or is readable by others."""


class UnsignedMail(Exception):
    """Bytes about to leave unsigned although [dkim] is configured: a send path that skipped
    `ConfirmWorker.outbound_bytes`. The row fails loudly rather than mail going out that providers junk."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    algorithm: str  # rsa-sha256 | ed25519-sha256
    selector: str
    domain: str
    private: bytes  # PEM (RSA) or base64 seed (ed25519), as dkimpy takes them


def signing_domain(config: Config) -> str:
    return (config.dkim.domain or config.confirm.from_.partition("@")[2]).lower()


def _read_key(key: str, path: str) -> bytes:
    try:
        mode = Path(path).stat().st_mode
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise DkimKeyError(f"[dkim] `{key}`: cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise DkimKeyError(
            f"[dkim] `{key}`: {path} is readable by others (mode {mode & 0o777:o}); "
            f"anyone who reads it can sign mail as us: chmod 600 {path}"
        )
    return data


class Signer:
    """The configured keys; `sign` prepends one DKIM-Signature per key (RSA first)."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys

    @classmethod
    def from_config(cls, config: Config) -> Signer | None:
        """None when [dkim] names no selector (check-config warns: mail goes out unsigned)."""
        dkim_config, domain = config.dkim, signing_domain(config)
        if not dkim_config.selector or not dkim_config.key_file:
            return None
        keys = [
            SigningKey(
                "rsa-sha256", dkim_config.selector, domain, _read_key("key_file", dkim_config.key_file)
            )
        ]
        if dkim_config.ed25519_selector and dkim_config.ed25519_key_file:
            seed = _read_key("ed25519_key_file", dkim_config.ed25519_key_file)
            keys.append(SigningKey("ed25519-sha256", dkim_config.ed25519_selector, domain, seed))
        signer = cls(keys)
        signer.sign(b"From: check@" + domain.encode() + b"\r\nSubject: key check\r\n\r\nx\r\n")  # fails now
        return signer

    def sign(self, raw: bytes) -> bytes:
        import dkim

        signatures = []
        for key in self.keys:
            try:
                header = dkim.DKIM(raw, minkey=1024).sign(
                    key.selector.encode(),
                    key.domain.encode(),
                    key.private,
                    signature_algorithm=key.algorithm.encode(),
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[h.lower().encode() for h in SIGNED_HEADERS],
                )
            except dkim.DKIMException as exc:
                raise DkimKeyError(f"[dkim] {key.algorithm} key for selector {key.selector}: {exc}") from exc
            signatures.append(header if header.endswith(b"\r\n") else header + b"\r\n")
        return b"".join(signatures) + raw


def is_signed(raw: bytes) -> bool:
    return raw[:15].lower() == b"dkim-signature:"


# ---- keys and their DNS records --------------------------------------------------------------------------


def generate_key(algorithm: str) -> tuple[bytes, str]:
    """(private key file content, the TXT record's value)."""
    if algorithm == "ed25519":
        import nacl.encoding
        import nacl.signing

        key = nacl.signing.SigningKey.generate()
        seed = key.encode(encoder=nacl.encoding.Base64Encoder)
        public = key.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
        return seed + b"\n", f"v=DKIM1; k=ed25519; p={public}"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"


def write_key(path: Path, content: bytes) -> None:
    """0600 from the first byte (never a moment readable by others); an existing key is not overwritten."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def txt_record(selector: str, domain: str, value: str) -> str:
    """The zone-file line, the value split into 255-byte strings as a TXT record must be."""
    chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"


def public_of(key: SigningKey) -> bytes:
    """The public key as DKIM compares it: the RSA modulus, or the raw ed25519 key."""
    if key.algorithm == "ed25519-sha256":
        import nacl.encoding
        import nacl.signing

        return bytes(nacl.signing.SigningKey(key.private, encoder=nacl.encoding.Base64Encoder).verify_key)
    from dkim.crypto import parse_pem_private_key

    modulus: int = parse_pem_private_key(key.private)["modulus"]
    return modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")


def public_in_record(record: bytes, algorithm: str) -> bytes | None:
    """The p= of a published DKIM key record in the same form as `public_of`; None when it has none."""
    tags = {}
    for part in record.decode("ascii", "replace").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            tags[name.strip()] = "".join(value.split())
    try:
        data = base64.b64decode(tags.get("p", ""), validate=True)
    except ValueError:
        return None
    if not data:
        return None
    if algorithm == "ed25519-sha256":
        return data
    from dkim.crypto import parse_public_key

    try:
        modulus: int = parse_public_key(data)["modulus"]
    except Exception:
        return None
    return modulus.to_bytes((modulus.bit_length() + 7) // 8, "big")


def published_key_notes(config: Config, signer: Signer) -> list[str]:
    """check-config: each key against its selector's TXT record, through [dns] (never fatal: DNS may be
    unreachable from where the operator runs it, and a record may still be on its way)."""
    import time

    from gateway.resolver import DnsTemporary, Lookups, make_resolver

    lookups = Lookups(make_resolver(config.dns), time.monotonic() + 10)
    notes = []
    for key in signer.keys:
        name = f"{key.selector}._domainkey.{key.domain}"
        try:
            records = lookups.txt(name)
        except DnsTemporary:
            notes.append(f"warning: dkim: could not look up {name} (DNS unreachable): not verified")
            continue
        if not records:
            notes.append(f"warning: dkim: no key published at {name}: receivers cannot verify our mail")
            continue
        published = public_in_record(records[0], key.algorithm)
        if published != public_of(key):
            notes.append(f"warning: dkim: the key published at {name} does not match the {key.algorithm} key")
        else:
            notes.append(f"dkim: {name} matches the {key.algorithm} key")
    return notes


def reloaded_signer(config: Config, current: Signer | None) -> Signer | None:
    """SIGHUP (key rotation: a new selector and key_file): the new keys, or the running ones when the
    new ones cannot be used, so a typo in a reload never sends mail unsigned."""
    import logging

    try:
        return Signer.from_config(config)
    except DkimKeyError as exc:
        logging.getLogger("abuse_gateway.confirm").error("reload: dkim keys kept: %s", exc)
        return current
