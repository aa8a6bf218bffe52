"""Hashing what a report carries (issue 19): digests of every attachment, PDQ of images, what is inside ZIPs
and attached messages, and the bomb limits — all on images generated for the test, never real material."""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
import zipfile
import zlib

import pytest

from parsers.content_hashes import HashLimits, content_hashes, pdq_hex
from parsers.message import parse_message
from tests import images
from tests.conftest import load_eml


def report(
    attachment: bytes, filename: str = "x.png", content_type: str = "image/png", **fields: str
) -> bytes:
    raw = load_eml("report_with_attachment_template.eml").decode()
    values = {
        "subject": "Found this on your server",
        "text": "See the attachment.",
        "message_id": uuid.uuid4().hex,
        **fields,
        "filename": filename,
        "content_type": content_type,
        "attachment": base64.encodebytes(attachment).decode().replace("\n", "\r\n"),
    }
    for key, value in values.items():
        raw = raw.replace("{" + key + "}", value)
    return raw.encode()


def forwarding(inner: bytes) -> bytes:
    raw = load_eml("report_attaching_message_template.eml")
    return raw.replace(b"{message_id}", uuid.uuid4().hex.encode()).replace(b"{inner}", inner)


def distance(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_every_attachment_has_md5_sha1_and_sha256_agreeing_with_its_row() -> None:
    data = images.original()
    raw = report(data)
    [digest] = [d for d in content_hashes(raw).attachments if d.size == len(data)]
    assert digest.md5 == hashlib.md5(data).hexdigest()
    assert digest.sha1 == hashlib.sha1(data).hexdigest()
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.sha256 in {a.sha256 for a in parse_message(raw).attachments}


def test_a_resized_reencoded_copy_is_within_the_pdq_distance_and_an_unrelated_image_is_not() -> None:
    [original] = [d for d in content_hashes(report(images.original())).attachments if d.pdq]
    copy_report = report(images.resized_copy(), "y.jpg", "image/jpeg")
    [copy] = [d for d in content_hashes(copy_report).attachments if d.pdq]
    [other] = [d for d in content_hashes(report(images.unrelated())).attachments if d.pdq]
    assert original.pdq and copy.pdq and other.pdq
    assert distance(original.pdq, copy.pdq) <= 31
    assert distance(original.pdq, other.pdq) > 31


def test_an_image_is_found_by_its_bytes_whatever_its_label() -> None:
    hashes = content_hashes(report(images.original(), "notes.bin", "application/octet-stream"))
    assert any(d.pdq for d in hashes.attachments)


def test_pdq_bits_are_packed_most_significant_first() -> None:
    assert pdq_hex([1] + [0] * 255) == "80" + "00" * 31
    assert pdq_hex([0] * 255 + [1]) == "00" * 31 + "01"


def test_an_image_inside_a_zip_is_hashed_as_a_nested_item() -> None:
    image = images.original()
    archive = images.zipped({"photos/a.png": image, "readme.txt": b"hello"})
    hashes = content_hashes(report(archive, "x.zip", "application/zip"))
    by_path = {n.path: n for n in hashes.nested}
    assert set(by_path) == {"zip:photos/a.png", "zip:readme.txt"}
    assert by_path["zip:photos/a.png"].hashes.sha256 == hashlib.sha256(image).hexdigest()
    assert by_path["zip:photos/a.png"].hashes.pdq is not None
    assert by_path["zip:photos/a.png"].parent_sha256 == hashlib.sha256(archive).hexdigest()
    assert hashes.defects == ()


def test_an_image_inside_an_attached_message_is_hashed_as_a_nested_item() -> None:
    inner = report(images.resized_copy(), "y.jpg", "image/jpeg")
    raw = forwarding(inner)
    hashes = content_hashes(raw)
    [nested] = [n for n in hashes.nested if n.hashes.pdq]
    assert nested.path.startswith("rfc822:")
    assert nested.hashes.sha256 == hashlib.sha256(images.resized_copy()).hexdigest()
    # The parent is the attached message as the store's attachment row has it.
    assert nested.parent_sha256 in {a.sha256 for a in parse_message(raw).attachments}


def test_a_zip_inside_an_attached_message_is_opened_too() -> None:
    archive = images.zipped({"a.png": images.original()})
    hashes = content_hashes(forwarding(report(archive, "x.zip", "application/zip")))
    assert any(n.path.endswith("zip:a.png") and n.hashes.pdq for n in hashes.nested)


@pytest.mark.parametrize(
    ("archive", "limits", "defect"),
    [
        (images.zipped({f"m{i}": b"x" for i in range(20)}), HashLimits(max_zip_members=5), "20 members"),
        (images.zipped({"big": b"\0" * 5000}, zipfile.ZIP_STORED), HashLimits(max_member_bytes=4096), "per"),
        (
            images.zipped({f"m{i}": bytes(range(256)) * 8 for i in range(4)}, zipfile.ZIP_STORED),
            HashLimits(max_total_bytes=5000),
            "in all",
        ),
        (images.zipped({"bomb": b"\0" * 1_000_000}), HashLimits(), "ratio"),
    ],
    ids=["member_count", "member_size", "total_size", "ratio"],
)
def test_zip_bomb_limits_are_defects_never_exceptions(
    archive: bytes, limits: HashLimits, defect: str
) -> None:
    hashes = content_hashes(report(archive, "x.zip", "application/zip"), limits)
    assert any(d.startswith("hash_limit:") and defect in d for d in hashes.defects), hashes.defects


def test_a_zip_directory_that_lies_about_sizes_is_bounded_by_what_is_read() -> None:
    data = b"\0" * 200_000
    archive = bytearray(images.zipped({"small": data}))
    # The central directory claims 10 bytes uncompressed: the bound counts the bytes really read.
    central = archive.rfind(b"PK\x01\x02")
    archive[central + 24 : central + 28] = struct.pack("<I", 10)
    hashes = content_hashes(report(bytes(archive), "x.zip", "application/zip"))
    assert hashes.defects  # a ratio or CRC complaint, not an exception


def test_a_broken_zip_or_image_is_a_defect() -> None:
    not_a_zip = content_hashes(report(b"PK\x03\x04junk", "x.zip"))
    assert any(d.startswith("zip_unreadable") for d in not_a_zip.defects)
    broken = images.original()[:200]
    assert any(d.startswith("image_undecodable") for d in content_hashes(report(broken)).defects)


def test_an_image_claiming_too_many_pixels_is_not_decoded() -> None:
    # A valid PNG header claiming 100 000 × 100 000 pixels, with one tiny IDAT: Pillow's bomb check.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    hashes = content_hashes(report(png))
    assert any(d.startswith("image_bomb") for d in hashes.defects), hashes.defects


def test_mail_without_attachments_or_with_garbage_never_raises() -> None:
    assert content_hashes(b"").nested == ()
    assert content_hashes(b"\xff\xfe garbage \x00" * 100) is not None
    deep = b"Content-Type: message/rfc822\r\n\r\n" * 200 + b"x"
    assert content_hashes(deep) is not None


def test_an_image_is_never_written_to_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow decodes from the BytesIO; nothing may open a file for writing while hashing.
    import builtins

    opened: list[str] = []
    real_open = builtins.open

    def watching_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(m in mode for m in "wax+"):
            opened.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watching_open)
    content_hashes(report(images.zipped({"a.jpg": images.resized_copy()}), "x.zip", "application/zip"))
    assert opened == []
