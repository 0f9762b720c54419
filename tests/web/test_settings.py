"""Settings: read from the environment, validated, and every one documented."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runarchive.core import InvalidInput
from runarchive.jobs import Settings
from runarchive.jobs.settings import ENV as JOBS_ENV
from runarchive.web import create_app, shutdown
from runarchive.web.settings import SETTINGS, WebSettings, default_database_url

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_setting_is_documented_in_configuration_md() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    names = {s.env for s in SETTINGS.values()} | set(JOBS_ENV.values())
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert missing == [], f"undocumented settings: {missing}"


def test_settings_come_from_the_environment() -> None:
    web = WebSettings.from_env(
        {
            "RUNARCHIVE_PORT": "9001",
            "RUNARCHIVE_WEB_THREADS": "8",
            "RUNARCHIVE_SECURE_COOKIES": "yes",
            "RUNARCHIVE_SECRET_KEY": "s3cret",
            "RUNARCHIVE_WS_PING_INTERVAL": "2.5",
        }
    )
    assert (web.port, web.web_threads, web.secure_cookies) == (9001, 8, True)
    assert web.secret_key == "s3cret"
    assert web.ws_ping_interval == 2.5
    assert web.max_sockets == 4  # half the threads unless set
    assert WebSettings.from_env({}, port=1234).port == 1234


@pytest.mark.parametrize(
    "env",
    [
        {"RUNARCHIVE_PORT": "http"},
        {"RUNARCHIVE_WEB_THREADS": "0"},
        {"RUNARCHIVE_WS_PING_INTERVAL": "-1"},
    ],
)
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        WebSettings.from_env(env)


def test_a_secret_key_is_required_outside_demo_and_testing(tmp_path: Path) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", runs_root=tmp_path, data_dir=tmp_path)
    with pytest.raises(InvalidInput, match="SECRET_KEY"):
        create_app({"JOBS_SETTINGS": settings, "WEB_SETTINGS": WebSettings()})


def test_demo_mode_keeps_a_generated_secret_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", runs_root=tmp_path, data_dir=tmp_path)
    web = WebSettings(demo=True)
    first = create_app({"JOBS_SETTINGS": settings, "WEB_SETTINGS": web})
    second = create_app({"JOBS_SETTINGS": settings, "WEB_SETTINGS": web})
    try:
        assert first.secret_key == second.secret_key
        assert len(str(first.secret_key)) >= 64
        assert stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode) == 0o600
        assert first.config["DATABASE_URL"] == default_database_url(tmp_path)
        assert (tmp_path / "runarchive.sqlite3").is_file()
    finally:
        shutdown(first)
        shutdown(second)


def test_create_app_takes_settings_by_their_variable_names(tmp_path: Path) -> None:
    app = create_app(
        {
            "TESTING": True,
            "RUNARCHIVE_RUNS_ROOT": str(tmp_path / "runs"),
            "RUNARCHIVE_DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "RUNARCHIVE_WS_PING_INTERVAL": "7",
            "SECRET_KEY": "from-config",
        }
    )
    try:
        settings = app.extensions["runarchive.deployment"].settings
        assert settings.runs_root == tmp_path / "runs"
        assert settings.redis_url == "redis://127.0.0.1:1/0"
        assert app.config["WS_PING_INTERVAL"] == 7.0
        assert app.secret_key == "from-config"
        assert (tmp_path / "data" / "runarchive.sqlite3").is_file()
    finally:
        shutdown(app)
