"""The hand-written OpenAPI document and docs/api.md match the app's real routes, both ways."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Flask

from runarchive.web.openapi import document
from tests.support.web import WebEnv

DOCS = Path(__file__).resolve().parents[2] / "docs"
IGNORED = {"/static/{filename}"}
VERBS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def app_routes(app: Flask) -> set[tuple[str, str]]:
    """Every (OpenAPI-style path, method) the app answers, HEAD and OPTIONS aside."""
    routes = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        if path in IGNORED:
            continue
        for method in (rule.methods or set()) & VERBS:
            routes.add((path, method))
    return routes


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in VERBS
    }


def test_every_route_is_in_the_openapi_document_and_nothing_else(web: WebEnv) -> None:
    routes = app_routes(web.app)
    doc = documented(document())
    assert routes - doc == set(), "routes missing from web/openapi.py"
    assert doc - routes == set(), "documented routes the app does not have"


def test_the_document_is_served_and_its_references_resolve(web: WebEnv) -> None:
    served = web.as_role("anonymous").get("/openapi.json").get_json()
    assert served["openapi"] == "3.1.0"
    schemas = served["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', str(served).replace("'", '"'))
    assert refs and all(ref in schemas for ref in refs)
    for item in served["paths"].values():
        for operation in item.values():
            assert operation["responses"], operation["summary"]


def test_docs_api_md_names_every_route(web: WebEnv) -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    for path, method in app_routes(web.app):
        flask_path = path.replace("{", "<").replace("}", ">")
        assert f"{method} {flask_path}" in text or (
            path.endswith(":archive") and f"WS {flask_path}" in text
        ), f"{method} {flask_path} is not in docs/api.md"


def test_the_audit_event_schema_is_the_api_answer_and_its_vocabulary(web: WebEnv) -> None:
    from runarchive.core import AuditAction, Outcome

    schema = document()["components"]["schemas"]["AuditEvent"]
    assert schema["properties"]["action"]["enum"] == [a.value for a in AuditAction]
    assert "fork" in schema["properties"]["action"]["enum"]
    assert schema["properties"]["outcome"]["enum"] == [o.value for o in Outcome]
    run = web.new_run()
    owner = web.as_role("owner")
    assert owner.post(f"/runs/{run.runid}/archive/{run.archive}/pin").status_code == 200
    (event,) = owner.get(f"/runs/{run.runid}/archive/audit").get_json()["events"]
    assert set(event) == set(schema["required"]) == set(schema["properties"])
