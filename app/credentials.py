"""Sessions (the ``sid`` cookie) and tokens (JWTs from ``/auth/token`` and personal API
tokens), all recorded in MongoDB so they can be ended.

Resolved credentials are cached per process for ``CACHE_SECONDS``: ending one drops it from
this process's cache at once, and other processes see the change when their entry expires,
within 5 seconds.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from bson import ObjectId

from app.acl import Principal
from app.clock import now
from app.errors import Invalid, NotFound, Unauthorized
from app.jsonio import ms
from app.storage import SESSIONS, TOKENS, Document, Storage, translated_async
from app.users import Users

CACHE_SECONDS = 3.0
CACHE_MAX = 50_000
PERSONAL_DEFAULT = 365 * 86400
PERSONAL_MAX = 10 * 365 * 86400
_ALGORITHM = "HS256"


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str
    issued_at: datetime
    expires_at: datetime


def _session_key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


class Credentials:
    def __init__(
        self, storage: Storage, users: Users, secret: str, session_ttl: int, token_ttl: int
    ):
        self.sessions = storage.system(SESSIONS)
        self.tokens = storage.system(TOKENS)
        self.users = users
        self.secret = secret
        self.session_ttl = session_ttl
        self.token_ttl = token_ttl
        self._cache: dict[str, tuple[float, Principal]] = {}

    # --- issuing ---------------------------------------------------------------------------

    async def open_session(self, user_id: str) -> tuple[str, datetime]:
        sid = secrets.token_urlsafe(32)
        moment = now()
        expires = moment + timedelta(seconds=self.session_ttl)
        async with translated_async():
            await self.sessions.insert_one(
                {
                    "_id": _session_key(sid),
                    "user": user_id,
                    "createdAt": moment,
                    "expiresAt": expires,
                }
            )
        return sid, expires

    async def issue_token(
        self, user_id: str, *, kind: str = "access", lifetime: int | None = None, name: str = ""
    ) -> IssuedToken:
        token_id = str(ObjectId())
        issued = now()
        expires = issued + timedelta(seconds=lifetime or self.token_ttl)
        claims = {
            "sub": user_id,
            "iat": int(issued.timestamp()),
            # Rounded up: the JWT must not lapse before the expiresAt announced for it (the
            # record's expiresAt, to the millisecond, is what ends it).
            "exp": math.ceil(expires.timestamp()),
            "jti": token_id,
            "typ": kind,
        }
        record = {
            "_id": token_id,
            "user": user_id,
            "kind": kind,
            "name": name,
            "createdAt": issued,
            "expiresAt": expires,
            "lastUsedAt": None,
        }
        async with translated_async():
            await self.tokens.insert_one(record)
        encoded = jwt.encode(claims, self.secret, algorithm=_ALGORITHM)
        return IssuedToken(token_id, encoded, issued, expires)

    async def create_personal_token(self, user: Principal, body: dict[str, Any]) -> dict[str, Any]:
        for key in body:
            if key not in ("name", "expiresIn"):
                raise Invalid(key, "is not a token field")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise Invalid("name", "is required: a string of at most 200 characters")
        lifetime = body.get("expiresIn", PERSONAL_DEFAULT)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int):
            raise Invalid("expiresIn", "must be a whole number of seconds")
        if not 1 <= lifetime <= PERSONAL_MAX:
            raise Invalid("expiresIn", f"must be between 1 and {PERSONAL_MAX} seconds")
        issued = await self.issue_token(user.user_id, kind="personal", lifetime=lifetime, name=name)
        return {
            "id": issued.id,
            "name": name,
            "token": issued.token,
            "createdAt": issued.issued_at,
            "expiresAt": issued.expires_at,
            "lastUsedAt": None,
        }

    async def personal_tokens(self, user: Principal) -> list[dict[str, Any]]:
        async with translated_async():
            found = (
                await self.tokens.find(
                    {"user": user.user_id, "kind": "personal", "expiresAt": {"$gt": now()}}
                )
                .sort("_id")
                .to_list()
            )
        return [
            {
                key: token.get(field)
                for key, field in (
                    ("id", "_id"),
                    ("name", "name"),
                    ("createdAt", "createdAt"),
                    ("expiresAt", "expiresAt"),
                    ("lastUsedAt", "lastUsedAt"),
                )
            }
            for token in found
        ]

    # --- ending ----------------------------------------------------------------------------

    async def revoke_personal_token(self, user: Principal, token_id: str) -> None:
        async with translated_async():
            result = await self.tokens.delete_one(
                {"_id": token_id, "user": user.user_id, "kind": "personal"}
            )
        if result.deleted_count == 0:
            raise NotFound(f"No token {token_id}")
        self._forget(f"t:{token_id}")

    async def end(self, credential: str) -> None:
        """End the session or token a principal signed in with (``Principal.credential``)."""
        kind, _, key = credential.partition(":")
        async with translated_async():
            if kind == "s":
                await self.sessions.delete_one({"_id": key})
            elif kind == "t":
                await self.tokens.delete_one({"_id": key})
        self._forget(credential)

    async def end_all(self, user_id: str) -> None:
        """End every session and token of a user (password changed, disabled, deleted)."""
        async with translated_async():
            await self.sessions.delete_many({"user": user_id})
            await self.tokens.delete_many({"user": user_id})
        for key in [k for k, (_, p) in self._cache.items() if p.user_id == user_id]:
            self._cache.pop(key, None)

    # --- resolving -------------------------------------------------------------------------

    async def from_session(self, sid: str) -> Principal:
        if not sid or len(sid) > 200:
            raise Unauthorized()
        credential = f"s:{_session_key(sid)}"
        return self._cached(credential) or await self._resolve(
            credential, self.sessions, {"_id": credential[2:]}
        )

    async def from_token(self, token: str) -> Principal:
        # Keyed by the whole token, a cache hit skips the signature check too; a token that
        # differs in any byte (another ``sub`` with a known ``jti``) misses. (The process
        # holds the signing secret anyway; hashing the key cost a visible share of a GET.)
        verified = "j:" + token
        hit = self._cached(verified)
        if hit is not None:
            return hit
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[_ALGORITHM],
                options={"require": ["sub", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError:
            raise Unauthorized() from None
        token_id, user_id = str(claims["jti"]), str(claims["sub"])
        credential = f"t:{token_id}"
        principal = await self._resolve(
            credential, self.tokens, {"_id": token_id, "user": user_id}, touch=True
        )
        self._cache[verified] = self._cache[credential]  # same principal, same expiry
        return principal

    async def current(self, principal: Principal) -> Principal | None:
        """The user behind ``principal``'s credential as they are now (groups may have
        changed), or None once the credential has ended; cached up to 4 s."""
        kind, _, key = principal.credential.partition(":")
        collection = self.sessions if kind == "s" else self.tokens
        try:
            found = self._cached(principal.credential) or await self._resolve(
                principal.credential, collection, {"_id": key}
            )
        except Unauthorized:
            return None
        return found if found.user_id == principal.user_id else None

    def _forget(self, credential: str) -> None:
        """Drop a credential from the cache, under every key it is cached by."""
        self._cache.pop(credential, None)
        for key in [k for k, (_, p) in self._cache.items() if p.credential == credential]:
            self._cache.pop(key, None)

    def _cached(self, credential: str) -> Principal | None:
        entry = self._cache.get(credential)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def _resolve(
        self, credential: str, collection: Any, selector: Document, touch: bool = False
    ) -> Principal:
        moment = now()
        async with translated_async():
            record = await collection.find_one({**selector, "expiresAt": {"$gt": moment}})
            if record is None:
                raise Unauthorized()
            if touch and record.get("kind") == "personal":
                await collection.update_one(
                    {"_id": record["_id"]}, {"$set": {"lastUsedAt": moment}}
                )
        principal = await self.users.active_principal(record["user"], credential)
        if principal is None:
            raise Unauthorized()
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        # Never cached past the credential's own expiry.
        lifetime = min(CACHE_SECONDS, (record["expiresAt"] - moment).total_seconds())
        self._cache[credential] = (time.monotonic() + lifetime, principal)
        return principal


def token_body(issued: IssuedToken) -> dict[str, Any]:
    """The seed's answer to ``POST /api/v1/auth/token``."""
    return {
        "success": True,
        "sucess": True,
        "type": "access",
        "token": issued.token,
        "issuedAt": ms(issued.issued_at),
        "expiresAt": ms(issued.expires_at),
    }
