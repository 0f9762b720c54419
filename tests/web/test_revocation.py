"""Revocation: logout, ``users passwd``, ``users remove`` and ``tokens revoke`` end access on
the very next request; CSRF tokens are new with each login.

The app is the module's real one (``conftest.web``) with its SQLite database; the account
commands run in-process (click's runner, the real commands and database) or as a separate
process against the same database while a live server answers over HTTP. Every test makes its
own users, since revoking is what they do.
"""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select

from runarchive.cli import cli
from runarchive.web.accounts import create_token, create_user, find_user
from runarchive.web.db import Database, add_missing_columns, db
from runarchive.web.models import User
from tests.support.processes import CLI, environment, http
from tests.support.web import PASSWORD, LiveServer, WebEnv, csrf_of, login

COOKIE = "runarchive_session"
NEW_PASSWORD = "a different long password"


def new_user(web: WebEnv) -> tuple[str, str]:
    """Add a user of this test only; return their name and an API token."""
    name = f"u-{uuid.uuid4().hex[:8]}"
    with web.app.app_context():
        session = db().session
        token = create_token(session, create_user(session, name, PASSWORD))
    return name, token


def account(web: WebEnv, *args: str, stdin: str = "") -> Any:
    """Run an account command in-process against the module's database."""
    url = web.app.config["DATABASE_URL"]
    return CliRunner().invoke(cli, [*args, "--database-url", url], input=stdin)


def cookie_of(client: FlaskClient) -> str:
    found = client.get_cookie(COOKIE)
    assert found is not None
    return found.value


def replay(web: WebEnv, cookie: str) -> FlaskClient:
    """A fresh client (another browser, an attacker) holding a copy of ``cookie``."""
    client = web.app.test_client()
    client.set_cookie(COOKIE, cookie)
    return client


def is_logged_in_as(client: FlaskClient, runid: str) -> bool:
    """Tell whether ``client`` may read run ``runid``, checking the page and the API agree."""
    page = client.get("/")
    listed = client.get(f"/runs/{runid}/archive/list")
    assert (page.status_code == 200) == (listed.status_code == 200)
    if page.status_code == 200:
        assert runid in page.get_data(as_text=True)
        return True
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    assert listed.status_code == 401 and listed.get_json()["error"]["code"] == "unauthorized"
    return False


def test_an_old_session_cookie_replayed_after_logout_is_refused(web: WebEnv) -> None:
    name, _ = new_user(web)
    run = web.new_run(owner=name)
    browser = web.app.test_client()
    csrf = login(browser, name)
    stolen = cookie_of(browser)
    elsewhere = replay(web, stolen)  # the same user on another device
    assert is_logged_in_as(replay(web, stolen), run.runid)

    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 302

    copy = replay(web, stolen)
    assert not is_logged_in_as(copy, run.runid)
    assert copy.get_cookie(COOKIE) is None  # the stale cookie was cleared
    assert not is_logged_in_as(elsewhere, run.runid)  # logout ends every session of the user
    again = web.app.test_client()
    login(again, name)  # a new login works, and the old cookie stays dead
    assert is_logged_in_as(again, run.runid)
    assert not is_logged_in_as(replay(web, stolen), run.runid)


def test_a_cookie_without_a_session_generation_is_refused(web: WebEnv) -> None:
    """A cookie signed by the previous version (or forged with a leaked key but no row)."""
    name, _ = new_user(web)
    run = web.new_run(owner=name)
    with web.app.app_context():
        user_id = find_user(db().session, name).id  # type: ignore[union-attr]
    client = web.app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["_fresh"] = True
    assert not is_logged_in_as(client, run.runid)


def test_a_csrf_token_from_before_login_is_refused_after_login(web: WebEnv) -> None:
    name, _ = new_user(web)
    run = web.new_run(owner=name)
    client = web.app.test_client()
    before = csrf_of(client)  # the login form's token, used to log in
    response = client.post(
        "/login", data={"username": name, "password": PASSWORD, "csrf_token": before}
    )
    assert response.status_code == 302
    after = csrf_of(client, "/")
    assert after != before
    url = f"/runs/{run.runid}/rq/api/delete-archive"
    refused = client.post(url, json={"archive_name": run.archive}, headers={"X-CSRFToken": before})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "csrf_failed"
    assert (run.path / "archives" / str(run.archive)).is_file()
    done = client.post(url, json={"archive_name": run.archive}, headers={"X-CSRFToken": after})
    assert done.status_code == 200
    assert not (run.path / "archives" / str(run.archive)).exists()


def test_one_users_csrf_token_is_refused_in_another_users_session_in_the_same_browser(
    web: WebEnv,
) -> None:
    first, _ = new_user(web)
    second, _ = new_user(web)
    run = web.new_run(owner=second)
    client = web.app.test_client()
    login(client, first)
    first_token = csrf_of(client, "/")
    assert client.post("/logout", data={"csrf_token": first_token}).status_code == 302
    login(client, second)
    url = f"/runs/{run.runid}/rq/api/delete-archive"
    refused = client.post(
        url, json={"archive_name": run.archive}, headers={"X-CSRFToken": first_token}
    )
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "csrf_failed"
    assert (run.path / "archives" / str(run.archive)).is_file()
    assert csrf_of(client, "/") != first_token


def test_users_passwd_refuses_the_old_cookie_and_the_old_password_but_keeps_tokens(
    web: WebEnv,
) -> None:
    name, token = new_user(web)
    run = web.new_run(owner=name)
    browser = web.app.test_client()
    login(browser, name)
    assert is_logged_in_as(browser, run.runid)

    changed = account(web, "users", "passwd", name, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert changed.exit_code == 0, changed.output
    assert "sessions have ended" in changed.output

    assert not is_logged_in_as(browser, run.runid)
    client = web.app.test_client()
    refused = client.post(
        "/login", data={"username": name, "password": PASSWORD, "csrf_token": csrf_of(client)}
    )
    assert refused.status_code == 401
    login(client, name, NEW_PASSWORD)
    assert is_logged_in_as(client, run.runid)
    listed = client.get(f"/runs/{run.runid}/archive/list", headers={"Authorization": ""})
    assert listed.status_code == 200
    by_token = web.app.test_client().get(
        f"/runs/{run.runid}/archive/list", headers={"Authorization": f"Bearer {token}"}
    )
    assert by_token.status_code == 200 and by_token.get_json()["archives"][0]["name"] == run.archive


def test_users_passwd_refuses_a_short_password_and_changes_nothing(web: WebEnv) -> None:
    name, _ = new_user(web)
    browser = web.app.test_client()
    login(browser, name)
    short = account(web, "users", "passwd", name, "--password-stdin", stdin="short\n")
    assert short.exit_code == 2 and "too short" in short.output
    assert browser.get("/").status_code == 200
    assert account(web, "users", "passwd", "nobody-here", "--password-stdin").exit_code == 1


def test_tokens_list_shows_id_prefix_and_time_but_never_the_token(web: WebEnv) -> None:
    name, first = new_user(web)
    second = account(web, "tokens", "create", name).output.strip()
    listed = account(web, "tokens", "list", name)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["ID", "PREFIX", "CREATED"]
    rows = [line.split() for line in lines[1:]]
    assert [row[1] for row in rows] == [first[:11], second[:11]]
    assert all(row[0].isdigit() and row[2].endswith("Z") and "T" in row[2] for row in rows)
    assert first not in listed.output and second not in listed.output
    with sqlite3.connect(web.root / "accounts.sqlite3") as conn:
        stored = conn.execute(
            "SELECT prefix FROM api_tokens JOIN users ON users.id = api_tokens.user_id "
            "WHERE users.name = ? ORDER BY api_tokens.id",
            (name,),
        ).fetchall()
    assert stored == [(first[:11],), (second[:11],)]
    nobody = account(web, "tokens", "list", "nobody-here")
    assert nobody.exit_code == 1 and "No user called" in nobody.output


def test_tokens_revoke_by_prefix_refuses_that_token_on_the_next_request(web: WebEnv) -> None:
    name, kept = new_user(web)
    revoked = account(web, "tokens", "create", name).output.strip()
    run = web.new_run(owner=name)
    url = f"/runs/{run.runid}/archive/list"

    def status(token: str) -> int:
        client = web.app.test_client()
        return client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code

    assert (status(kept), status(revoked)) == (200, 200)
    done = account(web, "tokens", "revoke", name, revoked[:9])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"revoked 1 token of {name}"
    assert (status(kept), status(revoked)) == (200, 401)

    again = account(web, "tokens", "revoke", name, revoked[:9])
    assert again.exit_code == 1 and "no token starting with" in again.output
    too_short = account(web, "tokens", "revoke", name, "ra_")
    assert too_short.exit_code == 2 and "at least 4" in too_short.output
    assert status(kept) == 200  # nothing revoked by the refusals

    by_whole_token = account(web, "tokens", "revoke", name, kept)
    assert by_whole_token.exit_code == 0, by_whole_token.output
    assert status(kept) == 401


def test_an_ambiguous_token_prefix_revokes_nothing(web: WebEnv) -> None:
    name, first = new_user(web)
    tokens = {first, *(account(web, "tokens", "create", name).output.strip() for _ in range(2))}
    with sqlite3.connect(web.root / "accounts.sqlite3") as conn:
        conn.execute(  # two tokens whose shown prefixes share their first characters
            "UPDATE api_tokens SET prefix = 'ra_abcd' || substr(prefix, 8) WHERE id IN "
            "(SELECT api_tokens.id FROM api_tokens JOIN users ON users.id = user_id "
            "WHERE users.name = ? ORDER BY api_tokens.id LIMIT 2)",
            (name,),
        )
    ambiguous = account(web, "tokens", "revoke", name, "ra_abcd")
    assert ambiguous.exit_code == 2 and "matches 2 tokens" in ambiguous.output
    listed = account(web, "tokens", "list", name).output.splitlines()[1:]
    assert len(listed) == 3
    everything = account(web, "tokens", "revoke", name)
    assert everything.exit_code == 0 and f"revoked 3 tokens of {name}" in everything.output
    assert account(web, "tokens", "list", name).output.strip() == f"{name} has no tokens"
    run = web.new_run(owner=name)
    for token in tokens:
        client = web.app.test_client()
        answer = client.get(
            f"/runs/{run.runid}/archive/list", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 401


def test_users_remove_refuses_both_the_session_and_the_token(web: WebEnv) -> None:
    name, token = new_user(web)
    run = web.new_run(owner=name)
    browser = web.app.test_client()
    login(browser, name)
    stolen = cookie_of(browser)
    assert is_logged_in_as(browser, run.runid)

    removed = account(web, "users", "remove", name)
    assert removed.exit_code == 0 and removed.output.strip() == f"removed user {name}"

    assert not is_logged_in_as(replay(web, stolen), run.runid)
    by_token = web.app.test_client().get(
        f"/runs/{run.runid}/archive/list", headers={"Authorization": f"Bearer {token}"}
    )
    assert by_token.status_code == 401
    with sqlite3.connect(web.root / "accounts.sqlite3") as conn:
        left = conn.execute(
            "SELECT (SELECT COUNT(*) FROM run_access WHERE runid = ?), "
            "(SELECT COUNT(*) FROM users WHERE name = ?)",
            (run.runid, name),
        ).fetchone()
    assert left == (0, 0)
    assert account(web, "users", "remove", name).exit_code == 1


def test_a_removed_user_added_again_does_not_inherit_the_old_cookies(web: WebEnv) -> None:
    name, _ = new_user(web)
    browser = web.app.test_client()
    login(browser, name)
    stolen = cookie_of(browser)
    with web.app.app_context():
        old_id = find_user(db().session, name).id  # type: ignore[union-attr]
    assert account(web, "users", "remove", name).exit_code == 0
    added = account(web, "users", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    with web.app.app_context():
        assert find_user(db().session, name).id == old_id  # type: ignore[union-attr]
    assert replay(web, stolen).get("/").status_code == 302


def test_a_revoke_from_another_process_applies_to_the_live_server_at_once(
    web: WebEnv, live: LiveServer
) -> None:
    """The command runs as its own process on the same database while the server answers."""
    name, token = new_user(web)
    run = web.new_run(owner=name)
    url = f"http://127.0.0.1:{live.port}/runs/{run.runid}/archive/list"
    status, body = http(url, token=token)
    assert status == 200 and body["archives"][0]["name"] == run.archive

    database = web.app.config["DATABASE_URL"]
    result = subprocess.run(
        [*CLI, "tokens", "revoke", name, "--database-url", database],
        capture_output=True, text=True, timeout=60, env=environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"revoked 1 token of {name}"
    refused = {"error": {"code": "unauthorized", "message": "Invalid API token."}}
    assert http(url, token=token) == (401, refused)


def test_passwd_without_a_terminal_says_to_use_password_stdin(web: WebEnv) -> None:
    name, _ = new_user(web)
    result = subprocess.run(
        [*CLI, "users", "passwd", name, "--database-url", web.app.config["DATABASE_URL"]],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=environment(), start_new_session=True,  # no controlling terminal
    )  # fmt: skip
    assert result.returncode == 2
    assert "--password-stdin" in result.stderr
    assert "Aborted" not in result.stderr + result.stdout
    client = web.app.test_client()
    login(client, name)  # the password is unchanged


OLD_SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL UNIQUE,
    password_hash VARCHAR(256) NOT NULL, is_admin BOOLEAN NOT NULL, created_at DATETIME NOT NULL);
CREATE TABLE run_access (id INTEGER PRIMARY KEY, runid VARCHAR(200) NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE, created_at DATETIME NOT NULL,
    CONSTRAINT uq_run_access UNIQUE (runid, user_id));
CREATE TABLE api_tokens (id INTEGER PRIMARY KEY, token_hash VARCHAR(64) NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE, created_at DATETIME NOT NULL);
INSERT INTO users VALUES (1, 'olduser', 'scrypt:x', 0, '2026-01-01 00:00:00.000000');
INSERT INTO api_tokens VALUES (1, 'abc', 1, '2026-01-01 00:00:00.000000');
"""


def test_a_database_made_by_an_older_version_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    url = f"sqlite:///{path}"
    database = Database(url)
    try:
        assert add_missing_columns(database.engine) == []  # done when it opened
        user = database.session.scalar(select(User).where(User.name == "olduser"))
        assert user is not None and user.session_generation == 0
        assert [t.prefix for t in user.tokens] == [None]
    finally:
        database.close()
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
        token_columns = {row[1] for row in conn.execute("PRAGMA table_info(api_tokens)")}
    assert "session_generation" in columns and "prefix" in token_columns
    listed = CliRunner().invoke(cli, ["tokens", "list", "olduser", "--database-url", url])
    assert listed.exit_code == 0 and "(unknown)" in listed.output
    Database(url).close()  # opening it again changes nothing and does not fail
