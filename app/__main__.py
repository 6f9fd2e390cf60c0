"""``python -m app``: serve the API, starting an embedded database when MONGODB_URL is unset."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from app import logs, serving
from app.embedded import EmbeddedDatabase, EmbeddedDatabaseError
from app.main import create_app
from app.settings import Settings, SettingsError


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _without_password(url: str) -> str:
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn handles SIGTERM itself while serving, then re-raises it once shut down. Left to its
    # default action that would kill us before the `finally` stopping the database runs.
    raise SystemExit(0)


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``settings`` (the tests' live servers use them too)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # Above info no access line is written, but uvicorn would still build each one's
        # arguments (the path with its query, the client's address) for every request.
        "access_log": settings.log_level in ("trace", "debug", "info"),
        "proxy_headers": True,
        # "auto" picks uvloop and httptools (installed with the project) where they run.
        "loop": "auto",
        "http": "auto",
        "ws": "websockets-sansio",  # the plain "websockets" protocol is deprecated
        "ws_max_size": settings.max_body_bytes,
        # Off by default: per socket, deflate costs ~34 KiB and CPU for every event.
        "ws_per_message_deflate": settings.ws_compression,
        # Engine.IO's own heartbeat checks every socket; uvicorn's websocket pings (every
        # 20 s per socket, two timers each) only doubled that work, in one burst for
        # sockets that connected together.
        "ws_ping_interval": None,
        "lifespan": "on",  # a failing startup (database unreachable) must stop the server
        # A stop waits this long for the requests under way (each bounded by DB_TIMEOUT_MS),
        # then cancels what is left: a connection whose client stopped reading never ends.
        "timeout_graceful_shutdown": settings.db_timeout_ms // 1000 + 5,
    }


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        _say(f"error: {exc}")
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    database: EmbeddedDatabase | None = None
    try:
        if settings.mongodb_url:
            _say(f"database: MongoDB at {_without_password(settings.mongodb_url)}")
        else:
            database = EmbeddedDatabase(
                settings.data_dir / "db",
                keep_changes_s=max(3600.0, settings.changes_retention_days * 86400),
            )
            database.start()
            settings = dataclasses.replace(settings, mongodb_url=database.url)
            _say(
                f"database: embedded SecantusDB at {database.url} (pid {database.pid}), "
                f"data in {database.storage_path}, log in {database.log_path}"
            )
        options = server_options(settings)
        if settings.workers > 1:
            # Each worker builds its own app (its own change stream and hub) from the
            # environment; the database URL, embedded or not, goes to them through it.
            os.environ["MONGODB_URL"] = settings.mongodb_url
            config = uvicorn.Config(
                "app.main:app_from_env", factory=True, workers=settings.workers, **options
            )
            _say(f"serving with {settings.workers} worker processes (websocket only)")
            logs.install()
            Multiprocess(config, sockets=[config.bind_socket()]).run()
            return 0
        app = create_app(settings)
        config = uvicorn.Config(app, **options)
        server = serving.Server(config, drain=app.state.hub.drain)
        logs.install()  # after uvicorn.Config has set up its loggers
        server.run()
        return 0 if server.started else 3
    except EmbeddedDatabaseError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if database is not None:
            database.stop()
            _say("database: embedded SecantusDB stopped")


if __name__ == "__main__":
    sys.exit(main())
