"""The pages blueprint and the app-wide behaviour: health, errors as JSON, security headers."""

from __future__ import annotations

import json

from runarchive.web.headers import CSP
from tests.support.web import WebEnv


def test_health_reports_database_and_redis(web: WebEnv) -> None:
    response = web.as_role("anonymous").get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["redis"] == "ok"
    assert body["workers"] == 0  # nobody serves this module's queue between bursts


def test_every_response_carries_the_security_headers(web: WebEnv) -> None:
    for path in ("/login", "/healthz", "/nowhere"):
        headers = web.as_role("anonymous").get(path).headers
        assert headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"


def test_unknown_routes_and_methods_answer_json_errors(web: WebEnv) -> None:
    client = web.as_role("owner")
    missing = client.get("/rq/api/nothing-here")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"
    wrong = client.post("/healthz")
    assert wrong.status_code == 405
    assert wrong.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["Allow"]


def test_pages_show_html_errors_and_send_anonymous_visitors_to_login(web: WebEnv) -> None:
    run = web.new_run()
    anonymous = web.as_role("anonymous").get(f"/runs/{run.runid}/archive?tab=x")
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"] == f"/login?next=/runs/{run.runid}/archive?tab%3Dx"
    refused = web.as_role("other").get(f"/runs/{run.runid}/archive")
    assert refused.status_code == 403
    assert refused.mimetype == "text/html"
    assert web.as_role("anonymous").get("/").headers["Location"] == "/login"


def test_the_dashboard_gets_its_config_as_inert_json(web: WebEnv) -> None:
    run = web.new_run()
    page = web.as_role("owner").get(f"/runs/{run.runid}/archive").get_data(as_text=True)
    assert '"urls":{"list":"/runs/' in page
    assert f'"ws":"/status/{run.runid}:archive"' in page
    assert '"can_write":true' in page
    assert '"max_comment":40' in page
    assert '"ARCHIVE_COMPLETE":"ARCHIVE_COMPLETE"' in page
    reader = web.new_run(public=True)
    public = web.as_role("anonymous").get(f"/runs/{reader.runid}/archive").get_data(as_text=True)
    assert '"can_write":false' in public


def test_every_page_showing_run_data_is_never_stored_by_a_cache(web: WebEnv) -> None:
    run = web.new_run()
    owner = web.as_role("owner")
    pages = [owner.get(f"/runs/{run.runid}/archive"), owner.get("/")]
    pages.append(web.as_role("anonymous").get("/login"))  # carries the session's CSRF token
    for response in pages:
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert response.headers["Cache-Control"] == "no-store", response.request.path
    assert run.runid in owner.get("/").get_data(as_text=True)
    assert run.runid in owner.get(f"/runs/{run.runid}/archive").get_data(as_text=True)


def _config_of(page: str) -> dict[str, object]:
    start = page.index('<script type="application/json" id="ra-config">') + len(
        '<script type="application/json" id="ra-config">'
    )
    return dict(json.loads(page[start : page.index("</script>", start)]))


def test_the_dashboard_gets_templates_of_the_inside_routes_that_reach_them(web: WebEnv) -> None:
    run = web.new_run()
    client = web.as_role("owner")
    config = _config_of(client.get(f"/runs/{run.runid}/archive").get_data(as_text=True))
    inside = config["urls"]["inside"]  # type: ignore[index]
    base = f"/runs/{run.runid}/archive/{{name}}"
    assert inside == {
        "entries": f"{base}/entries",
        "file": f"{base}/file/{{path}}",
        "diff": f"{base}/diff",
        "diff_file": f"{base}/diff/file/{{path}}",
    }
    assert run.archive is not None
    listing = client.get(inside["entries"].replace("{name}", run.archive)).get_json()
    assert "output" in [e["path"] for e in listing["entries"]]
    url = inside["file"].replace("{name}", run.archive).replace("{path}", "output/H1.pass.dat")
    assert client.get(url).data == (run.path / "output" / "H1.pass.dat").read_bytes()
