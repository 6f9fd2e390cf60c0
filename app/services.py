"""The services one server process runs on, built once in the lifespan and shared by every
front (REST handlers through ``request.app.state.services``, the realtime layer when built)."""

from __future__ import annotations

from dataclasses import dataclass

from app.audit import Audit
from app.bulk import Bulk
from app.credentials import Credentials
from app.cursors import Cursors
from app.definitions import Definitions
from app.entities import Entities
from app.expiry import Expiry, rules
from app.feed import Feed
from app.history import History
from app.idempotency import Idempotency
from app.openapi import OpenAPI
from app.realtime.changes import ResumeTokens
from app.settings import Settings
from app.storage import Storage
from app.throttle import LoginThrottle
from app.users import Users


@dataclass
class Services:
    settings: Settings
    storage: Storage
    users: Users
    entities: Entities
    definitions: Definitions
    openapi: OpenAPI
    cursors: Cursors
    idempotency: Idempotency
    bulk: Bulk
    feed: Feed
    tokens: ResumeTokens
    history: History
    audit: Audit
    credentials: Credentials
    throttle: LoginThrottle
    expiry: Expiry

    @classmethod
    def build(cls, settings: Settings, storage: Storage) -> Services:
        credentials_box: list[Credentials] = []

        async def end_credentials(user_id: str) -> None:
            await credentials_box[0].end_all(user_id)

        users = Users(storage, end_credentials)
        credentials = Credentials(
            storage, users, settings.signing_secret(), settings.session_ttl, settings.token_ttl
        )
        credentials_box.append(credentials)
        definitions = Definitions(storage, settings.definitions_poll_ms / 1000)
        entities = Entities(
            storage,
            users.exists,
            definitions,
            query_timeout_ms=settings.query_timeout_ms,
            max_entity_bytes=settings.max_entity_bytes,
        )
        history = History(storage)
        audit = Audit(storage)
        tokens = ResumeTokens(settings.signing_secret())
        return cls(
            settings=settings,
            storage=storage,
            users=users,
            entities=entities,
            definitions=definitions,
            openapi=OpenAPI(definitions),
            cursors=Cursors(settings.signing_secret()),
            idempotency=Idempotency(storage),
            bulk=Bulk(entities, history, audit),
            feed=Feed(storage, settings.changes_retention_days, tokens),
            tokens=tokens,
            history=history,
            audit=audit,
            credentials=credentials,
            throttle=LoginThrottle(storage),
            expiry=Expiry(storage, rules(max(1.0, settings.history_retention_days * 86400))),
        )
