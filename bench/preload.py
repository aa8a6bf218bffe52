"""`--preload N`: fill the store with N processed messages shaped like real rows (inbox + case + message +
indicators), with bulk SQL instead of the parsers, so a 1,000,000-message store takes minutes, not hours.

Rows look like what the gateway writes: raw bytes of a ~2 KB report, sha256, a unique Message-ID, a case per
four messages (the other three are amendments), two indicators per case, every inbox row `done`. Message
text is kept short (the raw bytes are the bulk), which keeps a 1 M preload near 3 GB on disk.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import messages


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME storage format


def preload(db_path: Path, n: int, *, chunk: int = 5000, time_limit: float = 900.0) -> dict[str, float]:
    from parsers.case_ref import new_case_id

    started = time.monotonic()
    rng = random.Random(42)
    templates = [messages.report(rng, 2048, n=i) for i in range(8)]
    conn = sqlite3.connect(db_path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # bench-only bulk load; the gateway sets FULL for itself
    base_inbox = conn.execute("SELECT coalesce(max(id),0) FROM inbox").fetchone()[0]
    base_case = conn.execute("SELECT coalesce(max(id),0) FROM cases").fetchone()[0]
    base_msg = conn.execute("SELECT coalesce(max(id),0) FROM messages").fetchone()[0]
    t0 = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=365)
    empty = json.dumps([])
    rcpt = json.dumps([messages.RECIPIENT])
    done = 0
    minted: set[str] = set()
    case_pk = base_case
    index = 0
    while done < n and time.monotonic() - started < time_limit:
        inbox_rows, case_rows, msg_rows, ind_rows = [], [], [], []
        for i in range(done, min(n, done + chunk)):
            ibx = base_inbox + 1 + i
            mpk = base_msg + 1 + i
            at = _ts(t0 + timedelta(seconds=i * 30))
            raw = templates[i % 8].replace(b"Message-ID: <bench.", f"Message-ID: <pre{i}.".encode(), 1)
            digest = hashlib.sha256(raw).hexdigest()
            mid = f"<pre{i}.{i:x}@reporter.example.net>"
            if i % 4 == 0:
                case_pk += 1
                index = 0
                host = f"login-{i}.bad{i % 977}.example"
                case_id = new_case_id("ABU")
                while case_id in minted:  # 35 random bits: a quarter million IDs meet about once
                    case_id = new_case_id("ABU")
                minted.add(case_id)
                case_rows.append(
                    (
                        case_pk,
                        case_id,
                        "open" if i % 3 else "closed",
                        f"reporter{i % 997}@reporter.example.net",
                        f"Phishing at {host}",
                        f"Phishing at {host.replace('.', '[.]')}",
                        "report",
                        None,
                        0,
                        at,
                        at,
                        0,
                    )
                )
                ind_rows.append((case_pk, "domain", host, host))
                ind_rows.append((case_pk, "url", f"https://{host}/verify?id={i}", host))
            index += 1
            inbox_rows.append(
                (
                    ibx,
                    f"pre-{i:012d}",
                    at,
                    f"reporter{i % 997}@reporter.example.net",
                    rcpt,
                    "192.0.2.1",
                    len(raw),
                    digest,
                    raw,
                    "done",
                    1,
                    None,
                    None,
                    None,
                    at,
                )
            )
            text = f"phishing report {i} at hxxps://login-{i}.bad.example/verify"
            msg_rows.append(
                (
                    mpk,
                    case_pk,
                    index,
                    ibx,
                    "report" if index == 1 else "amendment",
                    "person",
                    f"reporter{i % 997}@reporter.example.net",
                    f"reporter{i % 997}@reporter.example.net",
                    f"Phishing {i}",
                    f"Phishing {i}",
                    at,
                    mid,
                    empty,
                    empty,
                    digest,
                    "none" if index == 1 else "subject",
                    None,
                    text,
                    text,
                    empty,
                    empty,
                    None,
                    None,
                )
            )
        with conn:
            conn.executemany(
                "INSERT INTO inbox (id,intake_uid,received_at,mail_from,rcpt_tos,client_addr,size,"
                "sha256,raw,state,attempts,last_error,claimed_by,claimed_until,processed_at) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                inbox_rows,
            )
            conn.executemany(
                "INSERT INTO cases (id,case_id,status,reporter,subject,escaped_subject,kind,group_key,"
                "hold,created_at,updated_at,csam) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                case_rows,
            )
            conn.executemany(
                'INSERT INTO messages (id,case_pk,"index",inbox_id,kind,kind_rule,envelope_sender,'
                'from_addr,subject,escaped_subject,received_at,message_id,in_reply_to,"references",'
                "sha256,thread_signal,thread_ref,text,escaped_text,defects,flags,report,evidence) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                msg_rows,
            )
            conn.executemany(
                "INSERT OR IGNORE INTO indicators (case_pk,kind,value,host,host_rev) VALUES (?,?,?,?,?)",
                [(*row, row[3][::-1]) for row in ind_rows],
            )
        done = min(n, done + chunk)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {
        "rows": done,
        "seconds": round(time.monotonic() - started, 1),
        "db_mb": round(db_path.stat().st_size / 1e6, 1),
    }


def annotate_for_desk(db_path: Path) -> dict[str, float]:
    """Give a preloaded store what the desk's queue filters on (issue 20), in the proportions a busy desk
    might see: every 10th case assigned (7 people), an eighth of cases machine reports, 5 % of messages
    `unverified_sender`, 0.1 % `processing_failed`, 0.2 % of cases possible CSAM, 0.05 % CSAM."""
    started = time.monotonic()
    conn = sqlite3.connect(db_path, timeout=30)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        conn.execute("UPDATE cases SET assignee = 'analyst' || (id % 7) WHERE id % 10 = 0")
        conn.execute("UPDATE cases SET kind = 'machine_report' WHERE id % 8 = 5")
        conn.execute("UPDATE cases SET possible_csam = 1 WHERE id % 500 = 1")
        conn.execute("UPDATE cases SET csam = 1 WHERE id % 2000 = 2")
        conn.execute("""UPDATE messages SET flags = '["unverified_sender"]' WHERE id % 20 = 3""")
        conn.execute("""UPDATE messages SET flags = '["processing_failed"]' WHERE id % 1000 = 7""")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"seconds": round(time.monotonic() - started, 1)}


def preload_pg(url: str, n: int) -> dict[str, float]:
    """The same shape on PostgreSQL (issue 20), generated by the server itself (`generate_series`): a case per
    four messages, two thirds open, one indicator per case, and what `annotate_for_desk` gives SQLite
    (assignees, machine reports, `unverified_sender`, `processing_failed`, CSAM marks). Bodies are a byte:
    the desk's queries read no raw message. The store must be upgraded and empty."""
    from sqlalchemy import text

    from storage.engine import make_engine

    started = time.monotonic()
    at = "now() - interval '365 days' + {i} * interval '30 seconds'"
    host = "'login-'||((k-1)*4)||'.bad'||(((k-1)*4)%977)||'.example'"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit=off"))
        conn.execute(
            text(
                "INSERT INTO inbox (id,intake_uid,received_at,mail_from,confirm,rcpt_tos,client_addr,size,"
                "sha256,raw,state,attempts) SELECT i, 'pre-'||i, "
                + at.format(i="i")
                + ", 'r@x', true, '[]', "
                "'192.0.2.1', 2000, md5(i::text)||md5(i::text), '\\x00'::bytea, 'done', 1 "
                "FROM generate_series(1, :n) i"
            ),
            {"n": n},
        )
        conn.execute(
            text(
                "INSERT INTO cases (id,case_id,status,reporter,subject,escaped_subject,kind,hold,csam,"
                "possible_csam,created_at,updated_at,assignee) SELECT k, 'ABU-'||lpad(k::text, 10, '0'), "
                "CASE WHEN ((k-1)*4) % 3 = 0 THEN 'closed' ELSE 'open' END, "
                "'reporter'||(((k-1)*4) % 997)||'@reporter.example.net', 'Phishing at '||" + host + ", "
                "'Phishing at '||replace(" + host + ", '.', '[.]'), "
                "CASE WHEN k % 8 = 5 THEN 'machine_report' ELSE 'report' END, false, k % 2000 = 2, "
                "k % 500 = 1, " + at.format(i="(k-1)*4") + ", " + at.format(i="(k-1)*4") + ", "
                "CASE WHEN k % 10 = 0 THEN 'analyst'||(k % 7) END FROM generate_series(1, :cases) k"
            ),
            {"cases": n // 4},
        )
        conn.execute(
            text(
                "INSERT INTO messages (id,case_pk,index,inbox_id,kind,kind_rule,envelope_sender,from_addr,"
                'subject,escaped_subject,received_at,message_id,in_reply_to,"references",sha256,'
                "thread_signal,text,escaped_text,defects,flags) SELECT i, (i-1)/4+1, (i-1)%4+1, i, "
                "CASE WHEN (i-1)%4=0 THEN 'report' ELSE 'amendment' END, 'person', 'r@x', 'r@x', "
                "'Phishing '||(i-1), 'Phishing '||(i-1), "
                + at.format(i="i")
                + ", '<pre'||i||'@x>', '[]', '[]', "
                "md5(i::text)||md5(i::text), 'none', "
                "'phishing report '||(i-1)||' at hxxps://login-'||(i-1)||'.bad.example/verify', "
                "'phishing report '||(i-1)||' at hxxps://login-'||(i-1)||'.bad.example/verify', '[]', "
                """CASE WHEN i % 1000 = 7 THEN '["processing_failed"]' WHEN i % 20 = 3 """
                """THEN '["unverified_sender"]' ELSE '[]' END::json FROM generate_series(1, :n) i"""
            ),
            {"n": n},
        )
        conn.execute(
            text(
                "INSERT INTO indicators (case_pk,kind,value,host,host_rev) SELECT k, 'domain', "
                + host
                + ", "
                + host
                + ", reverse("
                + host
                + ") FROM generate_series(1, :cases) k"
            ),
            {"cases": n // 4},
        )
        for table in ("inbox", "cases", "messages", "indicators"):
            conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return {"rows": n, "seconds": round(time.monotonic() - started, 1)}
