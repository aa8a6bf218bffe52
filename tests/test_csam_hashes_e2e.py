"""Known-material matching end to end (issue 19): a report sent over SMTP to a served gateway with a hash list
in its configuration; its attachments' digests are stored, `cases list --hash` finds the case by any of
them, and the match reaches the case as a `possible_csam` signal. Images and lists are generated."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.intake import prepare
from parsers.content_hashes import content_hashes
from tests import images
from tests.conftest import RunningGateway, run_cli, start_gateway
from tests.test_content_hashes import report


def _pdq(data: bytes) -> str:
    [found] = [d.pdq for d in content_hashes(report(data)).attachments if d.pdq]
    assert found
    return found


def _config_file(tmp_path: Path, store_url: str, lists: list[str]) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[smtp]\nlisten = ["127.0.0.1:0"]\nhostname = "mx.test.example"\n'
        f'[intake]\naddresses = ["abuse@example.org"]\nmode = "thread"\n'
        f'[store]\nurl = "{store_url}"\nspool_dir = "{tmp_path}/spool"\ngroup_commit_ms = 1\n'
        f'[confirm]\nenabled = false\noutbox_dir = "{tmp_path}/outbox"\nsecret_file = "{tmp_path}/key"\n'
        f"[csam]\nhash_lists = {json.dumps(lists)}\n"
    )
    return path


@pytest.fixture
def served(tmp_path: Path, store_url: str) -> Callable[[list[str]], tuple[RunningGateway, Path]]:
    started: list[RunningGateway] = []

    def serve(lists: list[str]) -> tuple[RunningGateway, Path]:
        path = _config_file(tmp_path, store_url, lists)
        gateway = start_gateway(load_config(path))
        started.append(gateway)
        return gateway, path

    yield serve  # type: ignore[misc]
    for gateway in started:
        gateway.stop()


def _pdq_list(tmp_path: Path) -> str:
    path = tmp_path / "known-pdq.csv"
    path.write_text(f"pdq,label\n{_pdq(images.original())},test-series\n")
    return str(path)


def _send(gateway: RunningGateway, raw: bytes) -> dict:
    code, _ = gateway.send(raw)
    assert code == 250
    gateway.wait_idle()
    [case] = gateway.store.list_cases()
    return gateway.store.show_case(case["case_id"])


def test_a_reported_zip_of_an_image_is_stored_with_every_digest_and_found_by_each(
    served: Callable[..., tuple[RunningGateway, Path]], tmp_path: Path
) -> None:
    gateway, config = served([])
    image = images.resized_copy()
    archive = images.zipped({"photos/copy.jpg": image})
    case = _send(gateway, report(archive, "photos.zip", "application/zip"))
    [attachment] = case["messages"][0]["attachments"]
    assert attachment["md5"] == hashlib.md5(archive).hexdigest()
    assert attachment["sha1"] == hashlib.sha1(archive).hexdigest()
    [member] = attachment["contents"]
    assert member["path"] == "zip:photos/copy.jpg" and member["pdq"]
    assert member["sha256"] == hashlib.sha256(image).hexdigest()
    for digest in (
        attachment["md5"],
        attachment["sha1"],
        attachment["sha256"],
        member["md5"],
        member["sha1"],
        member["sha256"],
        member["pdq"],
    ):
        listed = json.loads(run_cli(config, "cases", "list", "--json", "--hash", digest.upper()))
        assert [row["case_id"] for row in listed] == [case["case_id"]], digest
    assert json.loads(run_cli(config, "cases", "list", "--json", "--hash", "0" * 64)) == []


def test_a_resized_copy_of_a_listed_image_gives_the_served_worker_a_hash_match_signal(
    served: Callable[..., tuple[RunningGateway, Path]], tmp_path: Path
) -> None:
    gateway, _ = served([_pdq_list(tmp_path)])
    case = _send(gateway, report(images.resized_copy(), "copy.jpg", "image/jpeg"))
    [(_, entry)] = gateway.store.messages_for_reprocess(failed_only=False, case_id=case["case_id"])
    signals = gateway.service.worker.csam.apply(prepare(entry)).csam_signals
    [signal] = signals
    assert signal.startswith("hash_match:test-series:pdq:") and int(signal.rsplit(":", 1)[1]) <= 31


def test_an_unrelated_image_gives_no_signal(
    served: Callable[..., tuple[RunningGateway, Path]], tmp_path: Path
) -> None:
    gateway, _ = served([_pdq_list(tmp_path)])
    case = _send(gateway, report(images.unrelated()))
    [(_, entry)] = gateway.store.messages_for_reprocess(failed_only=False, case_id=case["case_id"])
    assert gateway.service.worker.csam.apply(prepare(entry)).csam_signals == ()


def test_sighup_rereads_the_hash_lists(
    served: Callable[..., tuple[RunningGateway, Path]], tmp_path: Path
) -> None:
    listed = tmp_path / "known.txt"
    listed.write_text(hashlib.md5(b"something else").hexdigest() + "\n")
    gateway, _ = served([str(listed)])
    assert gateway.service.worker.csam.known.size() == 1
    image = images.original()
    listed.write_text(f"{hashlib.md5(b'something else').hexdigest()}\n{hashlib.md5(image).hexdigest()}\n")
    gateway.loop.call_soon_threadsafe(gateway.service.reload)
    deadline = time.monotonic() + 10
    while gateway.service.worker.csam.known.size() != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.service.worker.csam.known.size() == 2


def test_a_hash_match_marks_the_case_possible_csam_with_its_source(
    served: Callable[..., tuple[RunningGateway, Path]], tmp_path: Path
) -> None:
    gateway, config = served([_pdq_list(tmp_path)])
    case = _send(gateway, report(images.resized_copy(), "copy.jpg", "image/jpeg"))
    [row] = json.loads(run_cli(config, "cases", "list", "--json", "--flag", "possible_csam"))
    assert row["case_id"] == case["case_id"]
    assert row["possible_csam"] is True and row["csam"] is False
    meta = json.loads(run_cli(config, "cases", "show", case["case_id"], "--metadata", "--json"))
    assert any(s.startswith("hash_match:test-series:pdq:") for s in meta["possible_csam_sources"])
