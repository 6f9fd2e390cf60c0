"""``Idempotency-Key``: a retried create (or bulk) runs once; its repeats get the first answer.

Keys live in the ``_idempotency`` collection, per user, for ``TTL`` (24 hours, a TTL index
removes them). The first request inserts its key as *running* (the unique ``_id`` makes that
atomic across instances), runs, and stores its answer; a repeat replays that answer with
``Idempotent-Replayed: true``. A repeat while the first still runs gets 409; the same key with
another body gets 422. A running key whose request died (its process stopped) is taken over
once its lease has passed. Only answers a retry should see again are kept: 2xx and the
client-side validation errors; anything else (401/403/404, 429, 5xx, 503) frees the key, so
the client may retry with it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
import pymongo
from pymongo.errors import DuplicateKeyError
from starlette.responses import Response

from app import validation
from app.acl import Principal
from app.clock import now
from app.errors import APIError, Conflict, Invalid, KeyReused
from app.middleware import render
from app.storage import IDEMPOTENCY as KEYS
from app.storage import Storage, translated_async

log = logging.getLogger(__name__)

TTL = timedelta(hours=24)
LEASE = timedelta(seconds=60)
RELEASE_S = 1.0  # the most a failed request waits to free its key (the lease frees it later)
MAX_KEY = 255
REMEMBERED = frozenset({400, 409, 413, 415, 422})
_KEPT_HEADERS = ("location", "etag")
_MAX_STORED = 12 * 1024 * 1024  # an answer larger than this is not kept (BSON's 16 MiB cap)


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY or not all(" " <= c <= "~" for c in key):
        raise Invalid("Idempotency-Key", f"must be 1 to {MAX_KEY} printable ASCII characters")
    return key


def fingerprint(scope: str, body: Any) -> str:
    """What makes two requests the same: the method and path, and the body's JSON with its
    keys in order."""
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # nested past orjson's 255 levels; no write takes that
        raise Invalid("body", f"nested deeper than {validation.MAX_DEPTH} levels") from None
    return hashlib.sha256(scope.encode() + b"\0" + canonical).hexdigest()


class AnswerNotKept(Conflict):
    def __init__(self, status: int, size: int) -> None:
        super().__init__(
            f"The request with this Idempotency-Key was done (status {status}), but its answer "
            f"({size} bytes) was too large to keep; it is not run again. Read what it changed "
            "instead"
        )


class Idempotency:
    def __init__(self, storage: Storage):
        self.storage = storage

    @property
    def keys(self) -> Any:
        return self.storage.system(KEYS)

    async def run(
        self,
        user: Principal,
        key: str,
        scope: str,
        body: Any,
        work: Callable[[], Awaitable[Response]],
        request_id: str,
    ) -> Response:
        """The answer to the request ``key`` names: ``work``'s, run once, or the stored one."""
        key_id = hashlib.sha256(f"{user.user_id}\0{check_key(key)}".encode()).hexdigest()
        printed = fingerprint(scope, body)
        if not await self._claim(key_id, user, printed):
            found = await self._replay_or_take_over(key_id, printed)
            if found is not None:
                return found
        try:
            response = await work()
        except APIError as error:
            response = render(error, request_id)
        except BaseException:
            await self._release(key_id)
            raise
        await self._settle(key_id, response)
        return response

    async def _claim(self, key_id: str, user: Principal | None, printed: str) -> bool:
        """Insert the key as running; False when it exists (the unique ``_id`` decides)."""
        moment = now()
        try:
            async with translated_async():
                await self.keys.insert_one(
                    {
                        "_id": key_id,
                        "user": user.user_id if user is not None else None,
                        "fingerprint": printed,
                        "state": "running",
                        "lease": moment + LEASE,
                        "expiresAt": moment + TTL,
                    }
                )
        except (DuplicateKeyError, Conflict):  # Conflict: the translated DuplicateKeyError
            return False
        return True

    async def _replay_or_take_over(self, key_id: str, printed: str) -> Response | None:
        """The stored answer to replay, or None when this request takes the key over (its
        first holder died); 409 while it still runs, 422 for another body."""
        async with translated_async():
            found = await self.keys.find_one({"_id": key_id})
        if found is None:  # expired or released just now: run as the first
            if await self._claim(key_id, None, printed):
                return None
            raise Conflict("A request with this Idempotency-Key is running; retry shortly")
        if found.get("fingerprint") != printed:
            raise KeyReused()
        if found.get("state") == "done" and found.get("tooLarge"):
            raise AnswerNotKept(int(found["status"]), int(found["tooLarge"]))
        if found.get("state") == "done":
            headers = {**(found.get("headers") or {}), "Idempotent-Replayed": "true"}
            return Response(
                bytes(found.get("body") or b""),
                int(found["status"]),
                headers,
                media_type="application/json",
            )
        lease = found.get("lease")
        moment = now()
        if lease is not None and lease > moment:
            raise Conflict("A request with this Idempotency-Key is still running; retry shortly")
        async with translated_async():
            taken = await self.keys.update_one(
                {"_id": key_id, "state": "running", "lease": {"$eq": lease}},
                {"$set": {"lease": moment + LEASE}},
            )
        if taken.modified_count == 1:
            log.info("took over idempotency key %s after its lease ran out", key_id[:12])
            return None
        raise Conflict("A request with this Idempotency-Key is still running; retry shortly")

    async def _settle(self, key_id: str, response: Response) -> None:
        status = response.status_code
        body = bytes(response.body) if hasattr(response, "body") else b""
        if (200 <= status < 300 or status in REMEMBERED) and len(body) <= _MAX_STORED:
            headers = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
            done = {"state": "done", "status": status, "body": body, "headers": headers}
        elif 200 <= status < 300:
            # Done, but too large to keep: a retry must not run it again (a _bulk of creates
            # would make every entity twice), so it is told what happened instead.
            done = {"state": "done", "status": status, "tooLarge": len(body)}
        else:
            await self._release(key_id)
            return
        async with translated_async():
            await self.keys.update_one({"_id": key_id}, {"$set": done})

    async def _release(self, key_id: str) -> None:
        """Free the key of a request that failed. It may run after the request's deadline
        cancelled it (no deadline of the driver's applies then): bounded by RELEASE_S."""
        try:
            with pymongo.timeout(RELEASE_S):
                async with translated_async():
                    await self.keys.delete_one({"_id": key_id, "state": "running"})
        except APIError as exc:  # the lease frees it later
            log.warning("could not release idempotency key %s: %s", key_id[:12], exc)
