"""Real mail the gateway got wrong (issue 16): null senders, missed bounce subjects, backlog imports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parsers.auto import classify
from parsers.message import parse_message
from parsers.reports import parse_machine_report
from tests.conftest import RunningGateway, Sink, load_eml

# A relay or forwarder rewrote the envelope (SRS), so only the message itself says it is a bounce.
RELAYED = "SRS0=ab12=cd=relay.example=bounces@forwarder.example"

NULL_FROM_AND_BOUNCE_SUBJECTS = [
    "dsn_dragonfly_null_from.eml",
    "dsn_mcafee_null_from.eml",
    "bounce_subject_mail_system_error.eml",
    "bounce_subject_could_not_be_delivered.eml",
    "bounce_subject_permanent_failure.eml",
    "bounce_subject_ja_haishin.eml",
]


@pytest.mark.parametrize("name", NULL_FROM_AND_BOUNCE_SUBJECTS)
def test_null_from_and_postmaster_subjects_are_automatic_and_get_no_confirmation(
    gateway_factory, store_url: str, smtp_sink: Sink, name: str
) -> None:
    gateway: RunningGateway = gateway_factory(store_url, confirm={"smarthost": smtp_sink.address})
    assert gateway.send(load_eml(name), mail_from=RELAYED)[0] == 250
    gateway.wait_idle()
    [case] = gateway.store.list_cases()
    message = gateway.store.show_case(case["case_id"])["messages"][0]
    assert message["kind"] == "automatic", message["kind_rule"]
    [row] = gateway.store.list_outbox()
    assert row["state"] == "suppressed"
    assert smtp_sink.handler.received == []


def test_a_person_forwarding_a_bounce_themed_lure_is_still_a_person() -> None:
    raw = load_eml("bounce_subject_could_not_be_delivered.eml").replace(
        b"Subject: Mail could not be delivered", b"Subject: Fwd: Mail could not be delivered"
    )
    assert classify(parse_message(raw), "reporter@example.net", None).kind == "person"


def test_from_null_address_parses_as_the_empty_address_not_a_local_part() -> None:
    parsed = parse_message(load_eml("dsn_dragonfly_null_from.eml"))
    assert (parsed.from_addr, parsed.from_name) == ("", "MAILER-DAEMON")
    assert parse_message(b"Subject: x\r\n\r\nno From at all\r\n").from_addr is None


# flufl.bounce's own test corpus (`pip download --no-deps --no-binary :all: flufl.bounce`, unpack, point
# FLUFL_BOUNCE_DATA at its tests/data/). Not vendored: it is another project's material, and CI passes
# without it.
_FLUFL = os.environ.get("FLUFL_BOUNCE_DATA")


@pytest.mark.skipif(not _FLUFL or not Path(_FLUFL).is_dir(), reason="FLUFL_BOUNCE_DATA not set")
def test_flufl_bounce_corpus_is_classified_automatic() -> None:
    files = sorted(p for p in Path(str(_FLUFL)).iterdir() if p.suffix == ".txt")
    missed = []
    for path in files:
        raw = path.read_bytes()
        if classify(parse_message(raw), None, parse_machine_report(raw)).kind != "automatic":
            missed.append(path.name)
    assert len(files) - len(missed) >= 114, missed
