"""Blueprint ``retention``: pins, a run's retention policy, and prune (issue 15).

``POST /runs/<runid>/archive/<name>/pin`` and ``…/unpin`` (write) answer 200
``{"name", "pinned"}``; ``GET /runs/<runid>/archive/policy`` (read) answers the policy that
applies (the run's own, else the site default, else every count 0: keep everything) and ``PUT``
(write) stores the run's own from a JSON object of ``keep_*`` counts (a missing one is 0);
``POST /runs/<runid>/archive/prune`` (write) answers ``{"keep", "remove", "bytes_freed"}``:
with ``dry_run=1`` what a prune would do now, nothing touched (200); without it the same plan,
with the prune queued as a job on the run's slot (202, plus ``job_id``; the job decides again
when it runs and removes only what the policy drops then).

Every value is parsed once here (the run by ``access``, the name by ``archive_ref``, the
policy by ``parse_policy``) and the core does the rest under the run lock: pin, unpin and PUT
are refused with 409 while another operation holds the run (``busy``) or on a read-only run.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from runarchive.core import (
    AuditAction,
    InvalidInput,
    Policy,
    archive_ref,
    effective_policy,
    parse_policy,
    plan_prune,
    run_policy,
    set_pinned,
    set_run_policy,
)
from runarchive.jobs import enqueue_prune

from . import access
from .access import RunView
from .audit import recorded
from .jobs_api import json_response
from .jobs_context import jobs

bp = Blueprint("retention", __name__)


def pin(found: RunView, name: str, pinned: bool) -> dict[str, object]:
    """Pin or unpin archive ``name`` of a run the caller may write; return the answer."""
    ref = archive_ref(name)
    assert found.run is not None
    return {"name": ref.name, "pinned": set_pinned(found.run, ref, pinned)}


@bp.post("/runs/<runid>/archive/<name>/pin")
def pin_archive(runid: str, name: str) -> Response:
    """Pin an archive: never pruned, and not deleted until unpinned."""
    with recorded(AuditAction.PIN, runid, archive=name) as note:
        answer = pin(note.admit(access.require_write(runid)), name, True)
    return json_response(answer, 200)


@bp.post("/runs/<runid>/archive/<name>/unpin")
def unpin_archive(runid: str, name: str) -> Response:
    """Unpin an archive (a name that is not pinned is answered as unpinned)."""
    with recorded(AuditAction.UNPIN, runid, archive=name) as note:
        answer = pin(note.admit(access.require_write(runid)), name, False)
    return json_response(answer, 200)


def _site() -> Policy | None:
    return jobs().settings.site_policy


@bp.get("/runs/<runid>/archive/policy")
def get_policy(runid: str) -> Response:
    """Answer the retention policy that applies to the run."""
    found = access.require_read(runid)
    assert found.run is not None
    policy = effective_policy(run_policy(found.run), _site()) or Policy()
    return json_response(policy.to_dict(), 200)


@bp.put("/runs/<runid>/archive/policy")
def put_policy(runid: str) -> Response:
    """Store the run's own retention policy; answer it."""
    with recorded(AuditAction.POLICY, runid) as note:
        found = note.admit(access.require_write(runid))
        assert found.run is not None
        body = request.get_json(silent=True) if request.is_json else None
        if body is None:
            raise InvalidInput("The policy must be a JSON object (Content-Type: application/json).")
        policy = parse_policy(_whole_numbers(body), partial=True)
        set_run_policy(found.run, policy)
        note.detail = json.dumps(policy.to_dict(), sort_keys=True)  # the policy now in force
    return json_response(policy.to_dict(), 200)


def _whole_numbers(body: object) -> object:
    """JSON's ``3.0`` is the integer 3 (as JSON Schema says); ``2.5`` stays a refusal."""
    if not isinstance(body, dict):
        return body
    return {k: int(v) if type(v) is float and v.is_integer() else v for k, v in body.items()}


def _dry_run() -> bool:
    raw = request.args.get("dry_run")
    if raw in (None, "", "0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise InvalidInput("dry_run must be 1 or 0.")


@bp.post("/runs/<runid>/archive/prune")
def prune(runid: str) -> Response:
    """Answer what the run's policy keeps and removes; without ``dry_run``, queue the prune.

    A dry run changes nothing and is not recorded; a prune is (accepted, then the job's end).
    """
    found = access.require_write(runid)
    assert found.run is not None
    dry = _dry_run()
    plan = plan_prune(found.run, site_default=_site()).to_dict()
    if dry:
        return json_response(plan, 200)
    with recorded(AuditAction.PRUNE, runid) as note:
        note.admit(found)
        job_id = enqueue_prune(jobs(), found.run)
        note.accepted(job_id)
    return json_response({**plan, "job_id": job_id}, 202)
