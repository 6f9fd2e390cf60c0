"""Settings read from the environment: defaults, validation, and the generated signing secret."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from app.settings import Settings, SettingsError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.data_dir == Path("data")
    assert settings.mongodb_url == ""
    assert settings.mongodb_db == "platform"
    assert settings.app_secret == ""
    assert settings.admin_login == "admin"
    assert settings.session_ttl == 86400
    assert settings.token_ttl == 86400
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.cors_origins == ()
    assert settings.log_level == "info"


def test_values_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "HOST": "0.0.0.0",  # noqa: S104
            "PORT": "9001",
            "DATA_DIR": "/var/lib/platform",
            "MONGODB_URL": "mongodb://db:27017",
            "LOG_LEVEL": "DEBUG",
            "CORS_ORIGINS": "https://a.example/, ,https://b.example",
        }
    )
    assert settings.host == "0.0.0.0"  # noqa: S104
    assert settings.port == 9001
    assert settings.data_dir == Path("/var/lib/platform")
    assert settings.mongodb_url == "mongodb://db:27017"
    assert settings.log_level == "debug"
    assert settings.cors_origins == ("https://a.example", "https://b.example")


def test_empty_values_fall_back_to_defaults() -> None:
    assert Settings.from_env({"PORT": "", "MONGODB_DB": ""}) == Settings.from_env({})


@pytest.mark.parametrize("value", ["abc", "80.5", "0", "-1"])
def test_bad_port_is_rejected(value: str) -> None:
    with pytest.raises(SettingsError, match="PORT"):
        Settings.from_env({"PORT": value})


def test_bad_ttl_is_rejected() -> None:
    with pytest.raises(SettingsError, match="SESSION_TTL"):
        Settings.from_env({"SESSION_TTL": "soon"})


def test_settings_are_frozen_but_replaceable() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]
    assert dataclasses.replace(settings, mongodb_url="mongodb://x").mongodb_url == "mongodb://x"


def test_signing_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    secret = Settings.from_env({"DATA_DIR": str(data_dir)}).signing_secret()

    assert len(secret) >= 32
    path = data_dir / "app-secret"
    assert path.read_text() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A later process (new Settings) reads the same secret back.
    assert Settings.from_env({"DATA_DIR": str(data_dir)}).signing_secret() == secret


def test_app_secret_wins_over_the_generated_one(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path), "APP_SECRET": "from-the-environment"}
    assert Settings.from_env(env).signing_secret() == "from-the-environment"
    assert not (tmp_path / "app-secret").exists()

    Settings.from_env({"DATA_DIR": str(tmp_path)}).signing_secret()  # generates one
    assert Settings.from_env(env).signing_secret() == "from-the-environment"


def test_load_limits_default_and_from_the_environment() -> None:
    limits = Settings.from_env({}).limits()
    assert (limits.reads, limits.writes, limits.lists) == (64, 32, 4)
    assert limits.wait_s == 0.1 and limits.db_timeout_s == 10.0
    env = {
        "MAX_CONCURRENT_READS": "8",
        "MAX_CONCURRENT_WRITES": "4",
        "MAX_CONCURRENT_LISTS": "1",
        "ADMISSION_WAIT_MS": "250",
        "DB_TIMEOUT_MS": "1500",
    }
    limits = Settings.from_env(env).limits()
    assert (limits.reads, limits.writes, limits.lists) == (8, 4, 1)
    assert limits.wait_s == 0.25 and limits.db_timeout_s == 1.5
    for name in env:
        with pytest.raises(SettingsError):
            Settings.from_env({name: "0"})


def test_gc_freeze_seconds_default_off_and_refusals() -> None:
    assert Settings.from_env({}).gc_freeze_s == 5
    assert Settings.from_env({"GC_FREEZE_SECONDS": "0"}).gc_freeze_s == 0
    assert Settings.from_env({"GC_FREEZE_SECONDS": "0.5"}).gc_freeze_s == 0.5
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(SettingsError, match="GC_FREEZE_SECONDS"):
            Settings.from_env({"GC_FREEZE_SECONDS": bad})


def test_websocket_compression_is_off_unless_turned_on() -> None:
    assert Settings.from_env({}).ws_compression is False
    for raw, wanted in (("true", True), ("1", True), ("On", True), ("false", False), ("0", False)):
        assert Settings.from_env({"WS_COMPRESSION": raw}).ws_compression is wanted
    with pytest.raises(SettingsError, match="WS_COMPRESSION"):
        Settings.from_env({"WS_COMPRESSION": "maybe"})


def test_max_entity_bytes_default_and_ceiling() -> None:
    assert Settings.from_env({}).max_entity_bytes == 4 * 1024 * 1024
    assert Settings.from_env({"MAX_ENTITY_BYTES": "5242880"}).max_entity_bytes == 5 * 1024 * 1024
    for bad in ("5242881", "16777216", "0", "big"):
        with pytest.raises(SettingsError, match="MAX_ENTITY_BYTES"):
            Settings.from_env({"MAX_ENTITY_BYTES": bad})


@pytest.mark.parametrize(
    ("level", "access_log"), [("debug", True), ("info", True), ("warning", False), ("error", False)]
)
def test_uvicorn_writes_access_lines_only_at_levels_that_show_them(
    level: str, access_log: bool
) -> None:
    from app.__main__ import server_options

    options = server_options(Settings.from_env({"LOG_LEVEL": level}))
    assert options["log_level"] == level
    assert options["access_log"] is access_log
