"""User accounts: creation, changes, lookup, and the first admin of an empty database."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId

from app import validation
from app.acl import Principal
from app.clock import now
from app.errors import Conflict, Invalid, NotFound
from app.passwords import MAX_LENGTH, MIN_LENGTH, hash_password
from app.storage import USERS, Document, Storage, translated_async

log = logging.getLogger(__name__)

LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_CREATE_FIELDS = {"login", "password", "name", "groups", "branches", "admin"}
_PATCH_FIELDS = {"password", "name", "groups", "branches", "admin", "disabled"}


def render(user: Document) -> dict[str, Any]:
    return {
        "id": str(user["_id"]),
        "login": user["login"],
        "name": user.get("name", ""),
        "groups": list(_names(user.get("groups"))),
        "branches": list(_names(user.get("branches"))),
        "admin": user.get("admin") is True,  # as principal_of reads it
        "disabled": bool(user.get("disabled")),
        "createdAt": user.get("createdAt"),
        "updatedAt": user.get("updatedAt"),
    }


def principal_of(user: Document, credential: str = "") -> Principal:
    """Who a stored user is. Read strictly, as a record another program wrote may hold any
    types: only ``true`` makes an admin (``"false"`` is truthy), and groups and branches are
    the strings of a list (a string is not a list of its letters)."""
    name = user.get("name")
    return Principal(
        user_id=str(user["_id"]),
        login=str(user["login"]),
        name=name if isinstance(name, str) else "",
        groups=_names(user.get("groups")),
        branches=_names(user.get("branches")),
        admin=user.get("admin") is True,
        credential=credential,
    )


def _names(stored: Any) -> tuple[str, ...]:
    if not isinstance(stored, list):
        return ()
    return tuple(item for item in stored if isinstance(item, str))


def _password(value: Any) -> str:
    if not isinstance(value, str) or not MIN_LENGTH <= len(value) <= MAX_LENGTH:
        raise Invalid("password", f"must be a string of {MIN_LENGTH} to {MAX_LENGTH} characters")
    return value


def _fields(body: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    """Validated user fields from a body (password left in clear for the caller to hash)."""
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if name not in allowed:
            raise Invalid(name, "is not a user field that can be set")
        if name == "login":
            if not isinstance(value, str) or not LOGIN.fullmatch(value):
                raise Invalid("login", "1-128 letters, digits or . _ @ + -, starting alphanumeric")
        elif name == "password":
            _password(value)
        elif name == "name":
            if not isinstance(value, str) or len(value) > 256 or "\x00" in value:
                raise Invalid("name", "must be a string of at most 256 characters")
        elif name in ("groups", "branches"):
            value = validation.string_list(value, name)
        elif not isinstance(value, bool):
            raise Invalid(name, "must be true or false")
        fields[name] = value
    return fields


class Users:
    def __init__(self, storage: Storage, end_credentials: Callable[[str], Awaitable[None]]):
        self.storage = storage
        self.collection = storage.system(USERS)
        self.end_credentials = end_credentials

    async def create(self, body: dict[str, Any]) -> Document:
        fields = _fields(body, _CREATE_FIELDS)
        for required in ("login", "password"):
            if required not in fields:
                raise Invalid(required, "is required")
        moment = now()
        user: Document = {
            "_id": ObjectId(),
            "login": fields["login"],
            "name": fields.get("name", ""),
            "passwordHash": await hash_password(fields["password"]),
            "groups": fields.get("groups", []),
            "branches": fields.get("branches", []),
            "admin": fields.get("admin", False),
            "disabled": False,
            "createdAt": moment,
            "updatedAt": moment,
        }
        try:
            async with translated_async():
                await self.collection.insert_one(user)
        except Conflict:
            raise Conflict(f"A user with login {fields['login']!r} already exists") from None
        return user

    async def list(self) -> list[Document]:
        async with translated_async():
            return await self.collection.find({}, {"passwordHash": 0}).sort("_id").to_list()

    async def get(self, user_id: str) -> Document:
        found = await self.find(user_id)
        if found is None:
            raise NotFound(f"No user {user_id}")
        return found

    async def find(self, user_id: str) -> Document | None:
        if not validation.OBJECT_ID.fullmatch(user_id):
            return None
        async with translated_async():
            return await self.collection.find_one({"_id": ObjectId(user_id.lower())})

    async def exists(self, user_id: str) -> bool:
        return await self.find(user_id) is not None

    async def by_login(self, login: str) -> Document | None:
        async with translated_async():
            return await self.collection.find_one({"login": login})

    async def active_principal(self, user_id: str, credential: str) -> Principal | None:
        user = await self.find(user_id)
        if user is None or user.get("disabled"):
            return None
        return principal_of(user, credential)

    async def patch(self, user_id: str, body: dict[str, Any]) -> Document:
        user = await self.get(user_id)
        fields = _fields(body, _PATCH_FIELDS)
        if "password" in fields:
            fields["passwordHash"] = await hash_password(fields.pop("password"))
        if fields.get("admin") is False or fields.get("disabled") is True:
            await self._keep_an_admin(user)
        async with translated_async():
            await self.collection.update_one(
                {"_id": user["_id"]}, {"$set": {**fields, "updatedAt": now()}}
            )
        if "passwordHash" in fields or fields.get("disabled") is True:
            await self.end_credentials(user_id)
        return await self.get(user_id)

    async def delete(self, user_id: str) -> None:
        user = await self.get(user_id)
        await self._keep_an_admin(user)
        async with translated_async():
            await self.collection.delete_one({"_id": user["_id"]})
        await self.end_credentials(user_id)

    async def _keep_an_admin(self, user: Document) -> None:
        if user.get("admin") is not True or user.get("disabled"):
            return
        async with translated_async():
            others = await self.collection.count_documents(
                {"_id": {"$ne": user["_id"]}, "admin": True, "disabled": {"$ne": True}}
            )
        if others == 0:
            raise Conflict("This is the last active admin; make another admin first")

    async def ensure_admin(self, login: str, password: str) -> str | None:
        """Create the first admin when there are no users; returns a generated password."""
        async with translated_async():
            if await self.collection.find_one({}, {"_id": 1}) is not None:
                return None
        generated = None
        if not password:
            password = generated = secrets.token_urlsafe(18)
        try:
            await self.create({"login": login, "password": password, "admin": True})
        except Conflict:
            return None  # another instance created it first
        return generated
