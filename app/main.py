"""The ASGI application: REST routes, middleware, and the lifespan that connects the database
and builds the services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from app import collector
from app.admission import Admission
from app.api import EntityShortcut, not_found, routes
from app.middleware import RequestContext
from app.ratelimit import RateLimit
from app.realtime.hub import Hub
from app.realtime.router import SocketRouter
from app.services import Services
from app.settings import Settings
from app.storage import Storage

log = logging.getLogger("app")


class App(Starlette):
    """Starlette with only our middleware around the router (and the entity path's
    shortcut past it). Starlette's own error layers are left out: each route renders the API
    errors its handler raises (``Resource``), and ``RequestContext``, outermost, everything
    else."""

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = EntityShortcut(self.router)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        storage = Storage(
            settings.mongodb_url,
            settings.mongodb_db,
            batch_timeout_s=settings.db_timeout_ms / 1000,
        )
        try:
            await storage.prepare_system()
            services = Services.build(settings, storage)
            await services.expiry.prepare()
            generated = await services.users.ensure_admin(
                settings.admin_login, settings.admin_password
            )
            if generated:
                # Printed once, on the first start against an empty database.
                print(
                    f"Created admin user {settings.admin_login!r} with password: {generated}",
                    flush=True,
                )
            app.state.services = services
            await services.definitions.start()
            await services.history.start()
            await hub.start(services)
            services.expiry.start()
            freezer = collector.start(settings.gc_freeze_s)
            try:
                yield
            finally:
                await collector.stop(freezer)
                await services.expiry.stop()
                await hub.stop()
                await services.history.stop()
                await services.definitions.stop()
        finally:
            await storage.close()

    hub = Hub(max_sockets=settings.max_sockets, max_sockets_per_user=settings.max_sockets_per_user)
    middleware = [
        Middleware(RequestContext),  # outermost: every HTTP response, Socket.IO polling too
        Middleware(
            SocketRouter,
            hub=hub,
            cors_origins=settings.cors_origins,
            max_message_bytes=settings.max_body_bytes,
            polling=settings.workers == 1,
            max_opening=settings.max_sockets_opening,
        ),
    ]
    if settings.rate_limit > 0:  # off, it is not a layer at all (each one costs every request)
        middleware.append(Middleware(RateLimit, per_minute=settings.rate_limit))
    # Rate limits come before any work is admitted; API requests only, not sockets.
    middleware.append(Middleware(Admission, limits=settings.limits()))
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "X-Request-Id",
                    "If-Match",
                    "If-None-Match",
                    "Idempotency-Key",
                ],
                expose_headers=[
                    "Location",
                    "Link",
                    "X-Request-Id",
                    "Retry-After",
                    "ETag",
                    "Idempotent-Replayed",
                    "RateLimit-Limit",
                    "RateLimit-Remaining",
                    "RateLimit-Reset",
                ],
            )
        )
    app = App(routes=routes, middleware=middleware, lifespan=lifespan)
    app.router.default = not_found
    app.state.hub = hub
    return app


def app_from_env() -> Starlette:
    """The app for one worker process (``WORKERS`` > 1): settings from the environment the
    supervisor was started with, which names the database (embedded or not)."""
    from app import logs

    logs.install()
    return create_app(Settings.from_env())
