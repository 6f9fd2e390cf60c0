"""Process settings, read once from environment variables (see the README's table)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app import validation
from app.admission import Limits

DEFAULTS: dict[str, str] = {
    "HOST": "127.0.0.1",
    "PORT": "8000",
    "DATA_DIR": "./data",
    "MONGODB_URL": "",
    "MONGODB_DB": "platform",
    "APP_SECRET": "",
    "APP_ADMIN_LOGIN": "admin",
    "APP_ADMIN_PASSWORD": "",
    "SESSION_TTL": "86400",
    "TOKEN_TTL": "86400",
    "MAX_BODY_BYTES": str(1024 * 1024),
    "CORS_ORIGINS": "",
    "LOG_LEVEL": "info",
    "MAX_CONCURRENT_READS": "64",
    "MAX_CONCURRENT_WRITES": "32",
    "MAX_CONCURRENT_LISTS": "4",
    "ADMISSION_WAIT_MS": "100",
    "DB_TIMEOUT_MS": "10000",
    "WORKERS": "1",
    "DEFINITIONS_POLL_MS": "1000",
    "QUERY_TIMEOUT_MS": "15000",
    "MAX_BULK_BYTES": str(16 * 1024 * 1024),
    "MAX_ENTITY_BYTES": str(4 * 1024 * 1024),
    "CHANGES_RETENTION_DAYS": "7",
    "RATE_LIMIT": "0",
    "HISTORY_RETENTION_DAYS": "90",
    "GC_FREEZE_SECONDS": "5",
    "WS_COMPRESSION": "false",
    "MAX_SOCKETS": "50000",
    "MAX_SOCKETS_PER_USER": "500",
    "MAX_SOCKETS_OPENING": "1000",
}


class SettingsError(ValueError):
    """A setting has a value the server cannot run with."""


def _positive_int(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name) or DEFAULTS[name]
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")
    return value


def _whole(env: Mapping[str, str], name: str) -> int:
    """A whole number, 0 allowed (it turns the feature off)."""
    raw = env.get(name) or DEFAULTS[name]
    if not validation.digits(raw):
        raise SettingsError(f"{name} must be a whole number (0 for off), got {raw!r}")
    return int(raw)


# A change stream event of an update carries the entity before and after it, and the fields
# it set: about three entities. MongoDB fails the whole stream (realtime and history, for
# every store) on an event over 16 MiB, so an entity may not grow past a third of that.
MOST_ENTITY_BYTES = 5 * 1024 * 1024


def _entity_bytes(env: Mapping[str, str]) -> int:
    found = _positive_int(env, "MAX_ENTITY_BYTES")
    if found > MOST_ENTITY_BYTES:
        raise SettingsError(
            f"MAX_ENTITY_BYTES must be at most {MOST_ENTITY_BYTES}: a change event holds an "
            "entity about three times, and MongoDB refuses events over 16 MiB"
        )
    return found


def _number(env: Mapping[str, str], name: str, *, zero_is_off: bool = False) -> float:
    """A positive finite number; with ``zero_is_off``, 0 too (it turns the feature off)."""
    raw = env.get(name) or DEFAULTS[name]
    wanted = "0 or more" if zero_is_off else "positive"
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number ({wanted}), got {raw!r}") from None
    if not (value > 0 or (zero_is_off and value == 0)) or value == float("inf"):
        raise SettingsError(f"{name} must be {wanted}, got {raw}")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or DEFAULTS[name]).strip().lower()
    if raw not in _TRUE | _FALSE:
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw in _TRUE


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: Path
    mongodb_url: str
    mongodb_db: str
    app_secret: str
    admin_login: str
    admin_password: str
    session_ttl: int
    token_ttl: int
    max_body_bytes: int
    cors_origins: tuple[str, ...]
    log_level: str
    max_concurrent_reads: int
    max_concurrent_writes: int
    max_concurrent_lists: int
    admission_wait_ms: int
    db_timeout_ms: int
    workers: int
    definitions_poll_ms: int
    query_timeout_ms: int
    max_bulk_bytes: int
    max_entity_bytes: int
    changes_retention_days: float
    rate_limit: int
    history_retention_days: float
    gc_freeze_s: float
    ws_compression: bool = False
    max_sockets: int = 50_000
    max_sockets_per_user: int = 500
    max_sockets_opening: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name) or DEFAULTS[name]

        data_dir = Path(get("DATA_DIR"))
        origins = tuple(o.strip().rstrip("/") for o in get("CORS_ORIGINS").split(",") if o.strip())
        return cls(
            host=get("HOST"),
            port=_positive_int(env, "PORT"),
            data_dir=data_dir,
            mongodb_url=get("MONGODB_URL"),
            mongodb_db=get("MONGODB_DB"),
            app_secret=get("APP_SECRET"),
            admin_login=get("APP_ADMIN_LOGIN"),
            admin_password=get("APP_ADMIN_PASSWORD"),
            session_ttl=_positive_int(env, "SESSION_TTL"),
            token_ttl=_positive_int(env, "TOKEN_TTL"),
            max_body_bytes=_positive_int(env, "MAX_BODY_BYTES"),
            cors_origins=origins,
            log_level=get("LOG_LEVEL").lower(),
            max_concurrent_reads=_positive_int(env, "MAX_CONCURRENT_READS"),
            max_concurrent_writes=_positive_int(env, "MAX_CONCURRENT_WRITES"),
            max_concurrent_lists=_positive_int(env, "MAX_CONCURRENT_LISTS"),
            admission_wait_ms=_positive_int(env, "ADMISSION_WAIT_MS"),
            db_timeout_ms=_positive_int(env, "DB_TIMEOUT_MS"),
            workers=_positive_int(env, "WORKERS"),
            definitions_poll_ms=_positive_int(env, "DEFINITIONS_POLL_MS"),
            query_timeout_ms=_positive_int(env, "QUERY_TIMEOUT_MS"),
            max_bulk_bytes=_positive_int(env, "MAX_BULK_BYTES"),
            max_entity_bytes=_entity_bytes(env),
            changes_retention_days=_number(env, "CHANGES_RETENTION_DAYS"),
            rate_limit=_whole(env, "RATE_LIMIT"),
            history_retention_days=_number(env, "HISTORY_RETENTION_DAYS"),
            gc_freeze_s=_number(env, "GC_FREEZE_SECONDS", zero_is_off=True),
            ws_compression=_flag(env, "WS_COMPRESSION"),
            max_sockets=_positive_int(env, "MAX_SOCKETS"),
            max_sockets_per_user=_positive_int(env, "MAX_SOCKETS_PER_USER"),
            max_sockets_opening=_positive_int(env, "MAX_SOCKETS_OPENING"),
        )

    def limits(self) -> Limits:
        return Limits(
            reads=self.max_concurrent_reads,
            writes=self.max_concurrent_writes,
            lists=self.max_concurrent_lists,
            wait_s=self.admission_wait_ms / 1000,
            db_timeout_s=self.db_timeout_ms / 1000,
            query_timeout_s=self.query_timeout_ms / 1000,
            body_bytes=max(self.max_body_bytes, self.max_bulk_bytes),
        )

    def signing_secret(self) -> str:
        """APP_SECRET, or a generated one kept in DATA_DIR so restarts keep credentials valid."""
        if self.app_secret:
            return self.app_secret
        path = self.data_dir / "app-secret"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret)
        return secret
