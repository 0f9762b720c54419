"""The service's job commands (registered on ``runarchive`` by ``cli/__init__.py`` when named).

``worker`` installs the service's audit log (``web/auditlog.py``, the database ``serve`` uses:
``RUNARCHIVE_DATABASE_URL``, else the SQLite file in the data dir) as the jobs layer's
recorder, so every job's end is recorded before its final trigger; ``enqueue-*``, ``cancel``
and ``reconcile`` record into the same log (``enqueue-*``: the request's row, accepted or
refused, as ``cli:<user>`` from ``local``; a job they end, its end's row).

``runarchive worker``, ``enqueue-archive``, ``enqueue-restore``, ``enqueue-undo``,
``job-status``, ``cancel``, ``reconcile``.
Every option also has an environment variable (see ``settings.ENV``); options win. Exit codes as
the rest of the CLI (``exits.py``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from runarchive.core import (
    RUNID_RE,
    Actor,
    AuditAction,
    AuditEvent,
    Outcome,
    RunArchiveError,
    cut_detail,
    outcome_of,
)
from runarchive.jobs.audit import acting_as, install_recorder, record
from runarchive.jobs.cancel import cancel_job
from runarchive.jobs.context import JobsContext
from runarchive.jobs.enqueue import enqueue_archive, enqueue_restore, enqueue_undo
from runarchive.jobs.jobinfo import job_status
from runarchive.jobs.lifecycle import final_trigger, reconcile, recover_pending
from runarchive.jobs.lines import parse_line
from runarchive.jobs.settings import Settings
from runarchive.jobs.vocabulary import Event, Trigger
from runarchive.jobs.worker import run_worker

from .audit_commands import cli_user as audit_actor
from .audit_commands import login_name
from .exits import reporting

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option("--redis-url", default=None, help="Redis URL [env REDIS_URL; default: embedded]."),
    click.option(
        "--runs-root",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder holding the runs [env RUNARCHIVE_RUNS_ROOT].",
    ),
    click.option("--queue", default=None, help="RQ queue name [env RUNARCHIVE_QUEUE; runarchive]."),
    click.option("--key-prefix", default=None, help="Prefix of our Redis keys [runarchive]."),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the embedded Redis lives [env RUNARCHIVE_DATA_DIR].",
    ),
]


def deployment_options(func: F) -> F:
    """Add the options naming the Redis, the runs root and the queue."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def _settings(options: dict[str, Any]) -> Settings:
    return Settings.from_env(
        redis_url=options.get("redis_url"),
        runs_root=options.get("runs_root"),
        queue=options.get("queue"),
        key_prefix=options.get("key_prefix"),
        data_dir=options.get("data_dir"),
    )


@click.command()
@deployment_options
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--workers", "-n", default=1, show_default=True, help="Worker processes.")
@click.option("--name", default=None, help="Worker name (default: random).")
def worker(burst: bool, workers: int, name: str | None, **options: Any) -> None:
    """Run RQ worker(s) on the runarchive queue (reconciles stale jobs at start)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with reporting():
        settings = _settings(options)
        audit = _audit_log(settings)
        install_recorder(audit)  # forked work horses inherit it: each job's end gets its row
        try:
            run_worker(settings, burst=burst, workers=workers, name=name)
        finally:
            install_recorder(None)
            audit.close()


def _audit_log(settings: Settings) -> Any:
    """The service's audit log (the database ``serve`` uses), its spool replayed now."""
    from runarchive.web.auditlog import AuditLog
    from runarchive.web.settings import WebSettings, default_database_url

    web = WebSettings.from_env()
    url = web.database_url or default_database_url(settings.data_dir)
    audit = AuditLog(url, settings.data_dir, wait=web.audit_wait)
    audit.replay()
    return audit


_SUCCESS = (Trigger.ARCHIVE_COMPLETE, Trigger.RESTORE_COMPLETE, Trigger.UNDO_COMPLETE)


def _watch(ctx: JobsContext, runid: str, start: Callable[[], str], timeout: float) -> int:
    """Subscribe, start the job, print the channel's lines until its trigger; return exit code."""
    pubsub = ctx.clients.data.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(ctx.keys.status_channel(runid))
    try:
        job_id = start()
        click.echo(job_id)
        deadline = time.monotonic() + timeout
        next_poll = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                line = parse_line(str(message["data"]))
                click.echo(line.text)
                if line.event is Event.TRIGGER and line.job_id == job_id:
                    return 0 if line.trigger in _SUCCESS else 1
            if time.monotonic() >= next_poll:  # a trigger missed during a reconnect
                next_poll = time.monotonic() + 5
                trigger = final_trigger(ctx, job_id)
                if trigger is not None:
                    click.echo(f"(job ended: {trigger})")
                    return 0 if trigger.endswith("_COMPLETE") else 1
        click.echo(f"error: job {job_id} did not finish within {timeout:.0f} s", err=True)
        return 1
    finally:
        pubsub.close()


@contextmanager
def _service(options: dict[str, Any]) -> Iterator[JobsContext]:
    """The deployment's jobs context, its audit events going to the service's audit log (a
    queued job canceled here, or a dead one reaped, gets its end row like in the worker)."""
    settings = _settings(options)
    audit = _audit_log(settings)
    try:
        with JobsContext.from_settings(settings) as ctx:
            ctx.recorder = audit
            yield ctx
    finally:
        audit.close()


def _actor() -> Actor:
    return Actor(audit_actor(), "local")


def _recorded_start(
    ctx: JobsContext, runid: str, action: AuditAction, start: Callable[[JobsContext], str],
    archive: str | None = None, detail: str | None = None,
) -> str:  # fmt: skip
    """Start a job as ``cli:<user>`` from ``local``: its request's row (accepted, or refused
    with the reason), and the actor carried into the job for its end's row."""
    actor = _actor()
    stored = runid if RUNID_RE.fullmatch(runid) else None

    def row(outcome: Outcome, job_id: str | None, text: str | None) -> None:
        record(ctx.audit(), AuditEvent(
            user=actor.user, remote_addr=actor.remote_addr, runid=stored, action=action,
            outcome=outcome, archive=archive, job_id=job_id, detail=cut_detail(text),
        ))  # fmt: skip

    try:
        with acting_as(actor, action, archive, detail):
            job_id = start(ctx)
    except RunArchiveError as exc:
        row(outcome_of(exc), None, f"{detail}; {exc}" if detail else str(exc))
        raise
    row(Outcome.ACCEPTED, job_id, detail)
    return job_id


def _enqueue_command(
    options: dict[str, Any], runid: str, start: Callable[[JobsContext], str], wait: bool,
    timeout: float, as_json: bool, action: AuditAction, archive: str | None = None,
    detail: str | None = None,
) -> None:  # fmt: skip
    with reporting(as_json), _service(options) as ctx:

        def started(ctx: JobsContext) -> str:
            return _recorded_start(ctx, runid, action, start, archive, detail)

        if wait:
            sys.exit(_watch(ctx, runid, lambda: started(ctx), timeout))
        job_id = started(ctx)
        click.echo(json.dumps({"job_id": job_id}) if as_json else job_id)


_wait = click.option("--wait", is_flag=True, help="Print the status lines until the job ends.")
_timeout = click.option("--timeout", default=24 * 3600.0, help="With --wait: give up after S s.")
_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.command("enqueue-archive")
@click.argument("runid")
@click.option("--comment", "-c", default=None, help="Up to 40 characters.")
@click.option(
    "--links", type=click.Choice(["store", "follow"]), default=None,
    help="How the archive holds symlinks [default: the RUNARCHIVE_LINKS setting, else store].",
)  # fmt: skip
@_wait
@_timeout
@_json
@deployment_options
def enqueue_archive_cmd(
    runid: str,
    comment: str | None,
    links: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    **options: Any,
) -> None:
    """Queue an archive job for run RUNID; print its job id."""
    _enqueue_command(
        options,
        runid,
        lambda ctx: enqueue_archive(ctx, runid, comment, links),
        wait,
        timeout,
        as_json,
        AuditAction.ARCHIVE,
    )


@click.command("enqueue-restore")
@click.argument("runid")
@click.argument("name")
@click.option("--path", "paths", multiple=True, metavar="P",
              help="Restore only this file or folder (repeatable).")  # fmt: skip
@_wait
@_timeout
@_json
@deployment_options
def enqueue_restore_cmd(
    runid: str, name: str, paths: tuple[str, ...], wait: bool, timeout: float, as_json: bool,
    **options: Any,
) -> None:  # fmt: skip
    """Queue a restore of run RUNID from archive NAME; print its job id."""
    chosen = list(paths) if paths else None
    detail = f"paths: {', '.join(chosen)}" if chosen else None
    _enqueue_command(
        options, runid, lambda ctx: enqueue_restore(ctx, runid, name, chosen), wait, timeout,
        as_json, AuditAction.RESTORE, name[:300], detail,
    )  # fmt: skip


@click.command("enqueue-undo")
@click.argument("runid")
@_wait
@_timeout
@_json
@deployment_options
def enqueue_undo_cmd(runid: str, wait: bool, timeout: float, as_json: bool, **options: Any) -> None:
    """Queue an undo of run RUNID's last restore; print its job id."""
    _enqueue_command(
        options, runid, lambda ctx: enqueue_undo(ctx, runid), wait, timeout, as_json,
        AuditAction.UNDO,
    )  # fmt: skip


@click.command("job-status")
@click.argument("job_id")
@click.option("--exc-info", is_flag=True, help="Include the traceback of a failed job.")
@deployment_options
def job_status_cmd(job_id: str, exc_info: bool, **options: Any) -> None:
    """Print a job's status, times and progress as JSON."""
    with reporting(True), JobsContext.from_settings(_settings(options)) as ctx:
        click.echo(json.dumps(job_status(ctx, job_id, with_exc_info=exc_info)))


# The name a cancel from the command line is made in: the OS user, else ``cli``.
cli_user = login_name


@click.command("cancel")
@click.argument("job_id")
@_json
@deployment_options
def cancel_cmd(job_id: str, as_json: bool, **options: Any) -> None:
    """Cancel job JOB_ID (exit 0; 3 when it can no longer be canceled; 1 unknown job)."""
    with reporting(as_json), _service(options) as ctx:
        status = cancel_job(ctx, job_id, cli_user())
        payload = {"job_id": job_id, "status": str(status)}
        click.echo(json.dumps(payload) if as_json else f"{job_id} {status}")


@click.command("reconcile")
@deployment_options
def reconcile_cmd(**options: Any) -> None:
    """Free the slots of jobs that died and recover the runs they left (this host's view)."""
    with reporting(), _service(options) as ctx:
        for reaped in reconcile(ctx):
            click.echo(f"freed {reaped.runid}: job {reaped.job_id} ({reaped.reason})")
        for runid, action in recover_pending(ctx).items():
            click.echo(f"recovered {runid}: {action}")


COMMANDS: tuple[click.Command, ...] = (
    worker,
    enqueue_archive_cmd,
    enqueue_restore_cmd,
    enqueue_undo_cmd,
    job_status_cmd,
    cancel_cmd,
    reconcile_cmd,
)


@click.group()
def jobs_cli() -> None:
    """runarchive background jobs (also registered on the ``runarchive`` command)."""


for _command in COMMANDS:
    jobs_cli.add_command(_command)
