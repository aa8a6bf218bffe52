"""Known-material lists (issue 19): their text read into digests, the index that matches an attachment
exactly or, for PDQ, within the distance, and the signals a prepared message gets. Lists are generated."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from gateway.config import CsamConfig
from gateway.intake import prepare
from gateway.known_material import CsamSignals, KnownMaterial, load_lists
from parsers.content_hashes import content_hashes
from parsers.csam_terms import TermMatcher
from parsers.hash_lists import parse_hash_list, split_spec
from parsers.types import ContentHash
from storage.store import ClaimedEntry
from tests import images
from tests.test_content_hashes import report

MD5 = hashlib.md5(b"one").hexdigest()
SHA1 = hashlib.sha1(b"two").hexdigest()
SHA256 = hashlib.sha256(b"three").hexdigest()


def test_a_plain_list_is_read_by_digest_length_with_comments_and_bad_lines_counted() -> None:
    text = f"# from the provider\n{MD5}\n\n{SHA1.upper()}\n{SHA256}\nnot-a-hash\n"
    parsed = parse_hash_list(text, "provider")
    assert parsed.of("md5") == [bytes.fromhex(MD5)]
    assert parsed.of("sha1") == [bytes.fromhex(SHA1)]
    assert parsed.of("sha256") == [bytes.fromhex(SHA256)]
    assert parsed.bad_lines == 1
    assert parsed.labels == ["provider"]


def test_a_csv_list_names_its_columns_and_labels_each_row() -> None:
    text = f"md5,sha1,label,notes\n{MD5},,series-a,x\n,{SHA1},series-b,y\n"
    parsed = parse_hash_list(text, "csvlist")
    assert parsed.of("md5") == [bytes.fromhex(MD5)] and parsed.of("sha1") == [bytes.fromhex(SHA1)]
    rows = [*parsed.label_of["md5"], *parsed.label_of["sha1"]]
    assert [parsed.labels[i] for i in rows] == ["series-a", "series-b"]


def test_a_headerless_pdq_list_must_be_declared_because_pdq_and_sha256_have_the_same_length() -> None:
    assert split_spec("pdq:/lists/tx.txt") == ("pdq", "/lists/tx.txt")
    assert split_spec("/lists/plain.txt") == (None, "/lists/plain.txt")
    pdq = "ab" * 32
    assert parse_hash_list(pdq, "tx", "pdq").of("pdq") == [bytes.fromhex(pdq)]
    assert parse_hash_list(pdq, "plain").of("sha256") == [bytes.fromhex(pdq)]
    assert parse_hash_list(f"pdq,label\n{pdq},tx-1\n", "tx").of("pdq") == [bytes.fromhex(pdq)]


def _digest(data: bytes, filename: str = "x.png", content_type: str = "image/png") -> ContentHash:
    hashes = content_hashes(report(data, filename, content_type))
    [found] = [d for d in hashes.attachments if d.size == len(data)]
    return found


def test_exact_digests_match_and_pdq_matches_a_resized_copy_within_the_distance_only() -> None:
    original = _digest(images.original())
    copy = _digest(images.resized_copy(), "y.jpg", "image/jpeg")
    other = _digest(images.unrelated())
    known = KnownMaterial.from_lists(
        [parse_hash_list(f"{original.md5}", "md5list"), parse_hash_list(f"{original.pdq}", "pdqlist", "pdq")]
    )
    assert known.match(original) == ["md5list:md5:0", "pdqlist:pdq:0"]
    [near] = known.match(copy)
    assert near.startswith("pdqlist:pdq:") and 0 < int(near.rsplit(":", 1)[1]) <= 31
    assert known.match(other) == []
    pdq_list = parse_hash_list(f"{original.pdq}", "pdqlist", "pdq")
    strict = KnownMaterial.from_lists([pdq_list], pdq_distance=0)
    assert strict.match(copy) == []


def test_an_exact_index_finds_digests_sharing_a_prefix() -> None:
    digests = [bytes.fromhex("00" * 8 + f"{i:016x}") for i in range(5)]
    known = KnownMaterial.from_lists([parse_hash_list("\n".join(d.hex() for d in digests), "same-prefix")])
    probe = _digest(b"unused")
    assert known.match(probe) == []
    assert known.exact["md5"].find(digests[3]) == [0]
    assert known.exact["md5"].find(bytes.fromhex("00" * 8 + "ff" * 8)) == []


def test_lists_are_reread_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(f"{MD5}\n")
    assert load_lists([str(path)]).size() == 1
    path.write_text(f"{MD5}\n{SHA1}\n")
    assert load_lists([str(path)]).size() == 2


def _entry(raw: bytes, mail_from: str = "reporter@example.net") -> ClaimedEntry:
    from datetime import UTC, datetime

    return ClaimedEntry(1, raw, mail_from, ("abuse@example.org",), datetime.now(UTC), uuid.uuid4().hex, 1)


def test_a_persons_report_gets_a_terms_signal_with_its_language_and_custom_terms_say_custom() -> None:
    signals = CsamSignals.from_config(CsamConfig(terms=("widget smuggling",)))
    german = prepare(_entry(report(b"x", "a.bin", "application/octet-stream", text="Kinderpornografie hier")))
    assert signals.signals(german) == ("terms:de",)
    custom = prepare(_entry(report(b"x", "a.bin", "application/octet-stream", subject="Widget-Smuggling")))
    assert signals.signals(custom) == ("terms:custom",)
    ordinary = prepare(_entry(report(b"x", "a.bin", "application/octet-stream", text="cp -r dir /tmp")))
    assert signals.signals(ordinary) == ()


def test_replacing_the_default_terms_drops_them() -> None:
    signals = CsamSignals.from_config(CsamConfig(terms=("widget",), default_terms=False))
    german = prepare(_entry(report(b"x", "a.bin", "application/octet-stream", text="Kinderpornografie hier")))
    assert signals.signals(german) == ()


def test_automatic_mail_gets_no_terms_signal_but_hashes_still_match(tmp_path: Path) -> None:
    image = images.original()
    lists = tmp_path / "list.txt"
    lists.write_text(hashlib.md5(image).hexdigest() + "\n")
    signals = CsamSignals.from_config(CsamConfig(hash_lists=(str(lists),)))
    raw = report(image, subject="Automatic reply: CSAM report", text="I am out of the office.")
    bounce = prepare(_entry(raw.replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:")))
    assert bounce.kind == "automatic"
    assert signals.signals(bounce) == ("hash_match:list:md5:0",)


def test_term_languages_are_named_per_language() -> None:
    matcher = TermMatcher()
    assert matcher.languages("child porn here", "детская порнография") == ["en", "ru"]
    assert matcher.languages("児童ポルノ") == ["ja"]


def test_the_prefilter_keeps_matches_split_by_non_ascii_separators() -> None:
    matcher = TermMatcher()
    split = ("k·i·n·d·e·r·p·o·r·n·o", "child — porn", "child 😀 porn")
    split += ("Grüße, child\u3000porn", "детская—порнография")
    for text in split:
        assert matcher.match(text), text
    assert matcher.match("Grüße, cp -r dir") == []
