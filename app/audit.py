"""The audit log: who signed in (or failed to), issued or revoked tokens, changed users, store
definitions or an entity's access, and deleted entities. Written by the request that did it,
read by admins (``GET /api/v1/_audit``), newest first, kept a year (``app.expiry``)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.errors import PyMongoError

from app.clock import now
from app.storage import AUDIT, Document, Storage, translated_async

log = logging.getLogger(__name__)

MAX_LIMIT = 1000


class Audit:
    def __init__(self, storage: Storage):
        self.storage = storage

    async def record(self, action: str, actor: str | None, **details: Any) -> None:
        """One entry; a failure to write it is logged, never turned into the request's error
        (the change it describes has already been made)."""
        entry = {"at": now(), "action": action, "user": actor, **details}
        try:
            await self.storage.system(AUDIT).insert_one(entry)
        except PyMongoError as exc:
            log.error("audit entry %s by %s not written: %r", action, actor, exc)

    async def entries(
        self,
        limit: int,
        before: ObjectId | None = None,
        user: str | None = None,
        store: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Document]:
        selected: Document = {}
        if before is not None:
            selected["_id"] = {"$lt": before}
        if user is not None:
            selected["user"] = {"$eq": user}
        if store is not None:
            selected["store"] = {"$eq": store}
        moments: Document = {}
        if since is not None:
            moments["$gte"] = since
        if until is not None:
            moments["$lte"] = until
        if moments:
            selected["at"] = moments
        async with translated_async():
            found: list[Document] = (
                await self.storage.system(AUDIT)
                .find(selected)
                .sort("_id", DESCENDING)
                .limit(limit)
                .to_list()
            )
        for entry in found:
            entry["id"] = str(entry.pop("_id"))
        return found
