"""Every attachment's MD5, SHA-1 and SHA-256, and a PDQ hash for images, so known material can be matched.

Why these: the lists a provider receives (NCMEC, IWF, ThreatExchange) are in MD5, SHA-1 and PDQ; SHA-256 is
what the store already keys attachments by, so the rows can be found again. Images are found by their
bytes (a JPEG labelled `application/octet-stream` is still a JPEG), decoded in memory (never written to
disk) and hashed with `pdqhash`, Meta's reference algorithm; the 256 bits are packed most significant bit
first, which gives the hex the reference tools and ThreatExchange print.

What is inside counts too: images in an attached message (message/rfc822, however it is labelled) and
members of ZIP attachments are hashed as nested items. A ZIP is opened on a BytesIO and each member is read
with a bounded read, counting the bytes it really yields (the sizes in a ZIP's directory are the sender's
claim): a member count, per-member and total size, and a compression ratio bound the work, and each limit
hit is a defect, never an exception. This runs in the preparation child (gateway/preparer.py), whose
address space is capped, so an image that defeats Pillow's own bomb check can only kill that child.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import Message

# Imported with the module, not at first use: in the preparation child the imports run before its
# address-space cap is set (gateway/preparer.py), and numpy's start-up reserves memory of its own.
import numpy as np
import pdqhash
from PIL import Image

from parsers.attachments import attachment_bytes
from parsers.bodies import split_leaves
from parsers.escape import escape_text
from parsers.mime import MimeTree, as_tree
from parsers.types import ContentHash, ContentHashes, NestedHash

# Pillow refuses images above twice this many pixels and warns above it; we refuse both (a defect). 8 K × 8 K
# covers every real photo; PDQ works on a 512-pixel thumbnail anyway.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
# PDQ samples the image down to 512 pixels; decoding a JPEG at a reduced scale (draft) is far cheaper.
PDQ_SIDE = 512


@dataclass(frozen=True, slots=True)
class HashLimits:
    """Bounds on what is opened to hash what is inside; each hit is recorded as a `hash_limit:` defect."""

    max_zip_members: int = 1_000
    max_member_bytes: int = 64 * 1024 * 1024  # one member, uncompressed, as really read
    max_total_bytes: int = 256 * 1024 * 1024  # all members of all archives of one message
    max_ratio: int = 200  # uncompressed / compressed, per member (a 1 KB member may claim 1 GB)
    max_depth: int = 3  # attached messages inside attached messages
    max_parts: int = 1_000  # MIME parts walked, as parsers/message.py bounds its own walk


DEFAULT_LIMITS = HashLimits()


_IMAGE_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF
    b"MM\x00*",
)


def looks_like_image(data: bytes) -> bool:
    """By the bytes, not the label: a sender chooses the Content-Type."""
    return data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def pdq_hash(data: bytes, defects: list[str]) -> tuple[str, int] | None:
    """(hex, quality) of an image, or None with a defect when it cannot be decoded within the limits."""
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (PDQ_SIDE, PDQ_SIDE))  # JPEG: decode at 1/2…1/8 scale
                image.thumbnail((PDQ_SIDE, PDQ_SIDE))
                pixels = np.asarray(image.convert("RGB"))
        bits, quality = pdqhash.compute(pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        defects.append("image_bomb: over the pixel limit, not hashed")
        return None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many kinds on a broken or hostile image
        defects.append(f"image_undecodable: {type(exc).__name__}")
        return None
    return pdq_hex(bits), int(quality)


def pdq_hex(bits: object) -> str:
    """256 hash bits (0/1, bit 0 first), packed most significant bit first: the reference hex."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hash_bytes(data: bytes, defects: list[str]) -> ContentHash:
    found = pdq_hash(data, defects) if looks_like_image(data) else None
    return ContentHash(
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        sha1=hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        size=len(data),
        pdq=found[0] if found else None,
        pdq_quality=found[1] if found else None,
    )


@dataclass
class _Walk:
    limits: HashLimits
    defects: list[str] = field(default_factory=list)
    nested: list[NestedHash] = field(default_factory=list)
    archive_bytes: int = 0  # across every archive of the message
    parts: int = 0

    def inside(self, data: bytes, ctype: str, parent: str, path: str, depth: int) -> None:
        """What is inside one blob: ZIP members, or the parts of an attached message."""
        if data.startswith(b"PK\x03\x04") or ctype in ("application/zip", "application/x-zip-compressed"):
            self.zip_members(data, parent, path, depth)
        elif ctype.startswith("message/"):
            inner = message_from_bytes(data, policy=email_policy.compat32)  # inside a ZIP: not in the tree
            self.inside_messages([inner], parent, path, depth)

    def inside_messages(self, messages: list[Message], parent: str, path: str, depth: int) -> None:
        """The files of an attached message (its text is the forward's, not a file), to a bounded depth."""
        if depth >= self.limits.max_depth:
            self.defects.append(f"hash_limit: attached messages nested deeper than {self.limits.max_depth}")
            return
        number = 0
        for inner in messages:
            for leaf_type, leaf, part in self.leaves(inner):
                number += 1
                if leaf_type not in ("text/plain", "text/html"):
                    self.add(leaf, leaf_type, parent, f"{path}rfc822:{number}", depth + 1, part)

    def add(
        self, data: bytes, ctype: str, parent: str, path: str, depth: int, part: Message | None = None
    ) -> None:
        self.nested.append(NestedHash(parent, path, hash_bytes(data, self.defects)))
        inner = part.get_payload() if part is not None and ctype.startswith("message/") else None
        if isinstance(inner, list):  # an attached message already parsed with its parent: not again
            self.inside_messages([m for m in inner if isinstance(m, Message)], parent, path + "/", depth)
        else:
            self.inside(data, ctype, parent, path + "/", depth)

    def leaves(self, root: Message) -> list[tuple[str, bytes, Message]]:
        """(content type, bytes, part) of each leaf, in document order, iteratively (the stdlib's walk
        recurses)."""
        found: list[tuple[str, bytes, Message]] = []
        stack = [root]
        while stack:
            part = stack.pop()
            self.parts += 1
            if self.parts > self.limits.max_parts:
                self.defects.append(f"hash_limit: more than {self.limits.max_parts} MIME parts")
                break
            try:
                ctype = part.get_content_type()
                payload = part.get_payload()
            except Exception as exc:
                self.defects.append(f"hash_error: {type(exc).__name__}")
                continue
            if ctype.startswith("message/"):
                found.append((ctype, _message_bytes(part), part))
            elif isinstance(payload, list):
                stack.extend(p for p in reversed(payload) if isinstance(p, Message))
            else:
                data = part.get_payload(decode=True)
                found.append((ctype, data if isinstance(data, bytes) else b"", part))
        return found

    def zip_members(self, data: bytes, parent: str, path: str, depth: int) -> None:
        limits = self.limits
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            members = archive.infolist()
        except Exception as exc:  # BadZipFile, a lying directory, …
            self.defects.append(f"zip_unreadable: {type(exc).__name__}")
            return
        if len(members) > limits.max_zip_members:
            self.defects.append(f"hash_limit: zip has {len(members)} members, {limits.max_zip_members} read")
        for info in members[: limits.max_zip_members]:
            if info.is_dir():
                continue
            if self.archive_bytes >= limits.max_total_bytes:
                self.defects.append(f"hash_limit: zip contents over {limits.max_total_bytes} bytes in all")
                return
            content = self._read_member(archive, info)
            if content is not None:
                # A member's name is the sender's text, shown to the desk: stored escaped, like a filename.
                name = escape_text(info.filename)
                self.add(content, "application/octet-stream", parent, f"{path}zip:{name}", depth + 1)

    def _read_member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
        limits = self.limits
        cap = min(limits.max_member_bytes, limits.max_total_bytes - self.archive_bytes)
        ratio_cap = max(info.compress_size, 1) * limits.max_ratio
        chunks: list[bytes] = []
        size = 0
        try:
            with archive.open(info) as member:
                while chunk := member.read(min(1 << 20, cap + 1 - size)):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > ratio_cap:
                        self.defects.append(f"hash_limit: zip member over a {limits.max_ratio}:1 ratio")
                        return None
                    if size > cap:
                        limit = "per member" if cap == limits.max_member_bytes else "in all"
                        self.defects.append(f"hash_limit: zip member over {cap} bytes {limit}")
                        self.archive_bytes += size
                        return None
        except Exception as exc:  # bad CRC, encrypted, unsupported compression
            self.defects.append(f"zip_member_unreadable: {type(exc).__name__}")
            return None
        self.archive_bytes += size
        return b"".join(chunks)


# The same serialisation parsers/message.py gives an attached message, so the SHA-256 agrees with its row.
_FLATTEN_POLICY = email_policy.compat32.clone(linesep="\r\n", max_line_length=0)  # headers as they came


def _message_bytes(part: Message) -> bytes:
    payload = part.get_payload()
    if not isinstance(payload, list):
        data = part.get_payload(decode=True)
        return data if isinstance(data, bytes) else b""
    out = io.BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, policy=_FLATTEN_POLICY)
    for sub in payload:
        if isinstance(sub, Message):
            generator.flatten(sub)
    return out.getvalue()


def content_hashes(source: bytes | MimeTree, limits: HashLimits = DEFAULT_LIMITS) -> ContentHashes:
    """The hashes of every attachment (the leaves `parse_message` lists as files, by the same rule and the
    same bytes, so each SHA-256 is its attachment row's) and of what is inside them. Reads the message's one
    parsed tree (issue 18); an attached message's parts are read from that tree too, only what is inside a
    ZIP is parsed afresh. Never raises on bad mail: a failure is a defect."""
    walk = _Walk(limits)
    attachments: dict[str, ContentHash] = {}
    try:
        tree = as_tree(source)
        _plain, _html, files = split_leaves(list(tree.leaves), walk.defects)
        for part, ctype in files:
            data = attachment_bytes(part, ctype, walk.defects)
            digest = hash_bytes(data, walk.defects)
            if digest.sha256 in attachments:
                continue
            attachments[digest.sha256] = digest
            inner = part.get_payload() if ctype.startswith("message/") else None
            if isinstance(inner, list):
                walk.inside_messages([m for m in inner if isinstance(m, Message)], digest.sha256, "", 0)
            else:
                walk.inside(data, ctype, digest.sha256, "", 0)
    except MemoryError:
        raise
    except Exception as exc:  # RecursionError flattening a deep message, a stdlib surprise
        walk.defects.append(f"hash_error: {type(exc).__name__}")
    return ContentHashes(tuple(attachments.values()), tuple(walk.nested), tuple(dict.fromkeys(walk.defects)))
