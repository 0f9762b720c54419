"""Status lines: the exact grammar, coalescing, and the retained replay list."""

from __future__ import annotations

from runarchive.core import Phase, ProgressEvent
from runarchive.jobs.context import JobsContext
from runarchive.jobs.lines import (
    archive_deleted_line,
    archive_ready_line,
    cache_cleared_line,
    error_line,
    item_line,
    job_line,
    parse_line,
    progress_line,
    restore_complete_line,
    scrub_paths,
    trigger_line,
)
from runarchive.jobs.progress import ProgressRelay
from runarchive.jobs.stream import parse_entry
from runarchive.jobs.vocabulary import Event, JobKind, Trigger


def test_lines_are_exactly_weppcloud_shaped() -> None:
    assert job_line("J", Event.ENQUEUED, JobKind.ARCHIVE.call("R")) == "rq:J ENQUEUED archive_rq(R)"
    assert (
        job_line("J", Event.STARTED, JobKind.RESTORE.call("R", "R.20240101T000000Z.zip"))
        == "rq:J STARTED restore_archive_rq(R, R.20240101T000000Z.zip)"
    )
    assert job_line("J", Event.COMPLETED, JobKind.RESTORE.call("R")) == (
        "rq:J COMPLETED restore_archive_rq(R)"
    )
    assert trigger_line("J", Trigger.ARCHIVE_COMPLETE) == "rq:J TRIGGER   archive ARCHIVE_COMPLETE"
    assert trigger_line("J", Trigger.RESTORE_FAILED) == "rq:J TRIGGER   archive RESTORE_FAILED"
    assert progress_line("J", "archive", 3, 10, 300, 1000) == (
        "rq:J PROGRESS archive 3/10 files 300/1000 bytes"
    )
    assert item_line(JobKind.ARCHIVE, "a/b.txt") == "Adding a/b.txt"
    assert item_line(JobKind.RESTORE, "a/b.txt") == "Restored a/b.txt"
    assert archive_ready_line("n.zip") == "Archive ready: n.zip"
    assert restore_complete_line("n.zip") == "Restore complete: n.zip"
    assert archive_deleted_line("n.zip") == "Archive deleted: n.zip"
    assert cache_cleared_line(4) == "Cleared NoDb cache entries after restore (4)"
    assert error_line("first\nsecond") == "Error: first"
    assert len(error_line("x" * 1000)) == len("Error: ") + 300


def test_error_lines_name_the_run_by_its_id_and_hide_every_other_server_path() -> None:
    known = [("/srv/runs/ab/abc", "abc"), ("/srv/runs", "<runs root>"), ("/var/ra", "<data dir>")]
    assert error_line("[Errno 17] File exists: '/srv/runs/ab/abc/archives'", known) == (
        "Error: [Errno 17] File exists: 'abc/archives'"
    )
    assert error_line("Not enough disk space: 1 MiB free on /srv/runs/ab/abc. Retry.", known) == (
        "Error: Not enough disk space: 1 MiB free on abc. Retry."
    )
    assert scrub_paths("Run x is not under /srv/runs.", known) == "Run x is not under <runs root>."
    assert (
        scrub_paths("socket /var/ra/valkey.sock gone", known)
        == "socket <data dir>/valkey.sock gone"
    )
    assert scrub_paths("another run /srv/runs2/x (/etc/passwd); end", known) == (
        "another run <path> (<path>); end"
    )
    assert scrub_paths("near /srv/runs/ab/abcd/x", known) == "near <runs root>/ab/abcd/x"


def test_scrubbing_keeps_relative_paths_names_and_urls() -> None:
    text = "Entry 'a/b/c.txt' and '../../etc/passwd' of x.20240101T000000Z.zip, see http://h/p"
    assert scrub_paths(text) == text
    assert error_line("rq:J died at /tmp/x\nsecond line /etc") == "Error: rq:J died at <path>"


def test_a_line_with_a_trailing_newline_is_free_text_not_an_event() -> None:
    assert parse_line("rq:J TRIGGER   archive ARCHIVE_COMPLETE").trigger is Trigger.ARCHIVE_COMPLETE
    for text in (
        "rq:J TRIGGER   archive ARCHIVE_COMPLETE\n",
        "rq:J STARTED archive_rq(R)\n",
        "rq:J PROGRESS archive 1/2 files 3/4 bytes\n",
    ):
        parsed = parse_line(text)
        assert (parsed.event, parsed.trigger, parsed.progress) == (None, None, None)


def test_each_kind_has_its_triggers() -> None:
    assert JobKind.ARCHIVE.trigger(True) is Trigger.ARCHIVE_COMPLETE
    assert JobKind.ARCHIVE.trigger(False) is Trigger.ARCHIVE_FAILED
    assert JobKind.RESTORE.trigger(True) is Trigger.RESTORE_COMPLETE
    assert JobKind.RESTORE.trigger(False) is Trigger.RESTORE_FAILED


def test_parse_line_reads_back_what_the_builders_write() -> None:
    trig = parse_line("rq:abc-1 TRIGGER   archive RESTORE_COMPLETE")
    assert (trig.job_id, trig.event, trig.trigger) == (
        "abc-1",
        Event.TRIGGER,
        Trigger.RESTORE_COMPLETE,
    )
    prog = parse_line(progress_line("j", "restore", 1, 2, 3, 4))
    assert prog.progress == ("restore", 1, 2, 3, 4)
    start = parse_line("rq:j STARTED archive_rq(R)")
    assert (start.event, start.call) == (Event.STARTED, "archive_rq(R)")
    plain = parse_line("Adding rq:x STARTED y")
    assert plain.event is None and plain.text == "Adding rq:x STARTED y"
    assert parse_line("rq:j TRIGGER   archive NOPE").event is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _write(i: int, total: int) -> ProgressEvent:
    return ProgressEvent("archive", Phase.WRITE, i, total, i * 10, total * 10, f"f{i}")


def test_the_relay_coalesces_per_file_events_to_the_rate_limit(
    ctx: JobsContext, runid: str
) -> None:
    stream = ctx.stream(runid)
    clock = Clock()
    metas: list[dict[str, object]] = []
    relay = ProgressRelay(
        stream, "J", JobKind.ARCHIVE, rate=10, meta_sink=metas.append, clock=clock
    )
    relay(ProgressEvent("archive", Phase.SCAN, 0, 10_000, 0, 100_000))
    for i in range(1, 10_001):  # 10,000 files in 5 simulated seconds
        clock.now = i * 0.0005
        relay(_write(i, 10_000))
    clock.now = 5.0
    relay(ProgressEvent("archive", Phase.DONE, 10_000, 10_000, 100_000, 100_000))
    relay.flush()
    lines = stream.recent()
    adding = [x for x in lines if x.startswith("Adding ")]
    progress = [x for x in lines if " PROGRESS " in x]
    assert 45 <= len(adding) <= 52  # ~10 a second
    assert adding[-1] == "Adding f10000"  # the last file is always shown
    assert len(progress) <= 5 / 0.5 + 4
    assert progress[-1] == "rq:J PROGRESS archive 10000/10000 files 100000/100000 bytes"
    assert len(metas) <= 5 / 1.0 + 5  # once a second, plus phase ends
    assert metas[-1]["files_done"] == 10_000 and metas[-1]["phase"] == "done"
    assert stream.published == len(lines)


def test_the_retained_list_keeps_the_last_lines_with_a_ttl(ctx: JobsContext, runid: str) -> None:
    stream = ctx.stream(runid)
    for i in range(250):
        stream.publish(f"line {i}")
    recent = stream.recent()
    assert len(recent) == ctx.settings.status_keep == 200
    assert recent[0] == "line 50" and recent[-1] == "line 249"
    assert 0 < ctx.clients.data.ttl(ctx.keys.status_log(runid)) <= ctx.settings.status_ttl


def test_every_line_is_numbered_in_order_and_goes_plain_to_weppclouds_channel(
    ctx: JobsContext, runid: str
) -> None:
    stream = ctx.stream(runid)
    pubsub = ctx.clients.data.pubsub()
    pubsub.subscribe(ctx.keys.status_channel(runid), ctx.keys.status_feed(runid))
    try:
        for _ in range(2):
            assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        for i in range(250):
            stream.publish(f"line {i}")
        numbered = stream.numbered()
        assert [seq for seq, _ in numbered] == list(range(51, 251))  # trimmed, numbers kept
        assert numbered[-1] == (250, "line 249")
        assert 0 < ctx.clients.data.ttl(ctx.keys.status_seq(runid)) <= ctx.settings.status_ttl
        got: dict[str, list[str]] = {}
        while sum(len(v) for v in got.values()) < 500:
            message = pubsub.get_message(timeout=5)
            assert message is not None
            got.setdefault(message["channel"], []).append(message["data"])
        assert got[ctx.keys.status_channel(runid)] == [f"line {i}" for i in range(250)]
        feed = [parse_entry(x) for x in got[ctx.keys.status_feed(runid)]]
        assert feed == [(i + 1, f"line {i}") for i in range(250)]
    finally:
        pubsub.close()


def test_an_entry_is_split_at_its_first_space_only() -> None:
    assert parse_entry("7 Adding a b.txt") == (7, "Adding a b.txt")
    assert parse_entry("12 line\nwith a break") == (12, "line\nwith a break")
    assert parse_entry("rq:J STARTED archive_rq(R)") is None  # retained before numbering


def test_the_relay_never_repeats_a_progress_line(ctx: JobsContext, runid: str) -> None:
    stream = ctx.stream(runid)
    relay = ProgressRelay(stream, "J", JobKind.ARCHIVE, rate=10, clock=Clock())
    relay(ProgressEvent("archive", Phase.SCAN, 0, 2, 0, 20))
    relay(_write(1, 2))
    relay(_write(2, 2))
    relay(ProgressEvent("archive", Phase.DONE, 2, 2, 20, 20))
    relay.flush()
    assert stream.recent() == [
        "rq:J PROGRESS archive 0/2 files 0/20 bytes",
        "Adding f1",
        "Adding f2",
        "rq:J PROGRESS archive 2/2 files 20/20 bytes",
    ]
