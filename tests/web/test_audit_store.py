"""The audit log's storage: append-only, ordered by a growing id, migrated in, spooled durably.

Real SQLite files in temp folders; the failures are real (another process holding SQLite's
write lock, a database file made read-only), and so are the replays.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session

from runarchive.core import AuditAction, AuditEvent, Outcome
from runarchive.web import auditlog
from runarchive.web.auditlog import AuditLog
from runarchive.web.db import Database
from runarchive.web.models import ApiToken, AppendOnly, AuditRecord, Base, RunAccess, User


def event(n: int, runid: str = "r1", **extra: object) -> AuditEvent:
    values: dict[str, object] = {
        "user": "ana", "remote_addr": "10.0.0.1", "runid": runid, "action": AuditAction.PIN,
        "outcome": Outcome.DONE, "archive": f"{runid}.20261201T00000{n}Z.zip", **extra,
    }  # fmt: skip
    return AuditEvent(**values)  # type: ignore[arg-type]


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    found = AuditLog(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data", wait=0.2)
    yield found  # type: ignore[misc]
    found.close()


def test_the_model_refuses_updates_and_deletes(log: AuditLog) -> None:
    log.record(event(1))
    with Session(log.database.engine) as session:
        row = session.scalars(select(AuditRecord)).one()
        row.outcome = "failed"
        with pytest.raises(AppendOnly):
            session.commit()
        session.rollback()
        session.delete(session.scalars(select(AuditRecord)).one())
        with pytest.raises(AppendOnly):
            session.commit()
    assert [e["outcome"] for e in log.page(None, None).events] == ["done"]


def test_the_store_offers_inserts_and_reads_only() -> None:
    public = {n for n in vars(AuditLog) if not n.startswith("_")}
    assert public == {"record", "replay", "spooled", "page", "since", "close", "database"}
    source = Path(auditlog.__file__).read_text()
    assert "delete(" not in source and "update(" not in source


def test_rows_are_ordered_by_a_growing_id_and_sql_itself_refuses_changes(
    log: AuditLog, tmp_path: Path
) -> None:
    for n in range(3):
        log.record(event(n))
    rows = log.page(None, None).events
    ids = [e["id"] for e in rows]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3
    assert [r["archive"] for r in reversed(rows)] == [event(n).archive for n in range(3)]
    raw = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        # AUTOINCREMENT: an id is never handed out twice, so the id is the order and the cursor
        ddl = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'audit_events'").fetchone()
        assert "AUTOINCREMENT" in ddl[0]
        for statement in ("UPDATE audit_events SET outcome = 'x'", "DELETE FROM audit_events"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                raw.execute(statement)
    finally:
        raw.close()
    assert [e["id"] for e in log.page(None, None).events] == ids


def test_a_database_of_the_previous_schema_gets_the_table_and_keeps_its_accounts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    old_tables = [User.__table__, RunAccess.__table__, ApiToken.__table__]
    Base.metadata.create_all(engine, tables=old_tables)  # type: ignore[arg-type]
    with engine.begin() as conn:
        conn.execute(User.__table__.insert().values(name="ana", password_hash="x", is_admin=False,
                                                    session_generation=3))  # fmt: skip
    engine.dispose()
    assert "audit_events" not in inspect(create_engine(f"sqlite:///{path}")).get_table_names()

    database = Database(f"sqlite:///{path}")  # what every start-up does
    try:
        assert "audit_events" in inspect(database.engine).get_table_names()
        assert database.session.scalars(select(User.name)).all() == ["ana"]
    finally:
        database.close()
    log = AuditLog(f"sqlite:///{path}", tmp_path / "data")
    try:
        log.record(event(1))
        assert [e["user"] for e in log.page("r1", None).events] == ["ana"]
    finally:
        log.close()


# A process whose writes may not pass 1 KiB in any file: SQLite's WAL and shared-memory files
# fail with EFBIG, exactly like a full disk, while a spool line (a few hundred bytes) fits.
DISK_FULL = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
from runarchive.core import AuditEvent
from runarchive.web.auditlog import AuditLog
log = AuditLog(sys.argv[1], sys.argv[2], wait=0.2)
for line in sys.argv[3:]:
    log.record(AuditEvent.from_spool(json.loads(line)))
print(len(log.spooled()))
"""


def test_a_full_disk_spools_in_order_and_the_next_write_replays_exactly_once(
    log: AuditLog, tmp_path: Path
) -> None:
    log.record(event(0))
    log.close()
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    for wal in ("-wal", "-shm"):  # closed cleanly: checkpointed; the next writer makes them
        Path(f"{tmp_path / 'db.sqlite3'}{wal}").unlink(missing_ok=True)
    lines = [json.dumps(event(n).to_spool()) for n in (1, 2)]
    done = subprocess.run(
        [sys.executable, "-c", DISK_FULL, url, str(tmp_path / "data"), *lines],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # no exception: the actions' outcomes stand
    assert done.stdout.strip() == "2" and "spooled" in done.stderr
    assert [e.archive for e in log.spooled()] == [event(1).archive, event(2).archive]
    spool = tmp_path / "data" / auditlog.SPOOL_FILE
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    log.record(event(3))  # the disk has room again: the spool goes in first, in order
    rows = list(reversed(log.page(None, None).events))
    assert [r["archive"] for r in rows] == [event(n).archive for n in range(4)]
    assert log.spooled() == [] and log.replay() == 0


def test_a_write_locked_database_spools_and_a_start_up_replay_stores_each_event_once(
    log: AuditLog, tmp_path: Path
) -> None:
    log.record(event(0))
    holder = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    try:
        spooled = event(1)
        log.record(spooled)
        assert [e.event_id for e in log.spooled()] == [spooled.event_id]
        assert log.replay() == 0  # still locked: nothing moves, nothing is lost
        at_once = time.monotonic()
        log.record(event(2))  # right after a failure: to the spool without waiting again
        assert time.monotonic() - at_once < 0.15
        assert len(log.spooled()) == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # A replay that committed and died before emptying the spool runs again: no duplicate.
    spool = tmp_path / "data" / auditlog.SPOOL_FILE
    kept = spool.read_bytes()
    assert log.replay() == 2
    spool.write_bytes(kept)
    fresh = AuditLog(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
    try:
        assert fresh.replay() == 2  # read again, inserted at most once
        rows = fresh.page(None, None).events
        assert [r["archive"] for r in reversed(rows)] == [
            event(0).archive,
            spooled.archive,
            event(2).archive,
        ]
        assert rows[1]["time"].startswith(spooled.time.strftime("%Y-%m-%dT%H:%M:%S"))
    finally:
        fresh.close()


def test_a_torn_or_forged_spool_line_is_set_aside_and_the_rest_replayed(
    log: AuditLog, tmp_path: Path
) -> None:
    spool = tmp_path / "data" / auditlog.SPOOL_FILE
    spool.parent.mkdir()
    good = event(1)
    forged = {**good.to_spool(), "event_id": "x", "bytes": True}
    spool.write_text(
        json.dumps(good.to_spool()) + "\n" + json.dumps(forged) + "\n" + '{"event_id": "torn'
    )
    assert log.replay() == 1
    assert [e["archive"] for e in log.page(None, None).events] == [good.archive]
    rejected = Path(f"{spool}.rejected").read_text().splitlines()
    assert len(rejected) == 2 and rejected[1] == '{"event_id": "torn'
    assert spool.read_bytes() == b""


def test_since_reads_oldest_first_from_a_moment(log: AuditLog) -> None:
    first, second = event(1, runid="r1"), event(2, runid="r2")
    log.record(first)
    log.record(second)
    assert [e["runid"] for e in log.since(None, None)] == ["r1", "r2"]
    assert [e["runid"] for e in log.since(None, second.time)] == ["r2"]
    assert [e["runid"] for e in log.since("r1", None)] == ["r1"]


def test_a_database_file_that_cannot_even_be_made_spools_the_event(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    broken = AuditLog(f"sqlite:///{tmp_path / 'not-a-folder' / 'db.sqlite3'}", tmp_path / "data")
    try:
        broken.record(event(1))  # the action's outcome stands: no exception
        assert [e.archive for e in broken.spooled()] == [event(1).archive]
    finally:
        broken.close()
    moved = AuditLog(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data")
    try:
        assert moved.replay() == 1
        assert [e["archive"] for e in moved.page(None, None).events] == [event(1).archive]
    finally:
        moved.close()
