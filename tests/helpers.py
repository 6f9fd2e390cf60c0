"""Assertions and small clients shared by the end-to-end tests."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from bson import ObjectId

from app import acl
from app.storage import Storage

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


def assert_api_error(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """The response is the platform's error envelope with this status and machine code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False
    assert body["code"] == str(status)
    assert body["error"] == error
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["tags"], list) and body["tags"]
    assert body["requestId"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


@dataclass
class User:
    """A user with a bearer-token client."""

    id: str
    login: str
    password: str
    client: httpx.AsyncClient
    groups: list[str] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.get(url, **kw)

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.post(url, **kw)

    async def patch(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.patch(url, **kw)

    async def put(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.put(url, **kw)

    async def delete(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.delete(url, **kw)


_NEXT = re.compile(r'<([^>]+)>; rel="next"')


def next_link(response: httpx.Response) -> str | None:
    """The target of a list response's ``Link: <...>; rel="next"``, if any."""
    header = response.headers.get("link")
    if header is None:
        return None
    found = _NEXT.fullmatch(header)
    assert found, header
    return found.group(1)


async def seed_entities(
    storage: Storage,
    store: str,
    owner: str,
    created: Sequence[datetime],
    *,
    group: str | None = None,
    access: Sequence[str] = (),
    branch: Sequence[str] = (),
    batch: int = 2000,
    extra: Mapping[str, Any] | None = None,
) -> list[ObjectId]:
    """Write entities straight into a store collection, one per ``created`` time and in that
    order of ``_id``, with ``n`` counting from 0 and ``_readers`` as the API would set it.
    Returns their ids."""
    await storage.prepare_store(store)
    readers = acl.readers_of(owner, group, access, branch)
    ids = [ObjectId() for _ in created]
    docs = [
        {
            "_id": ids[n],
            "n": n,
            "name": f"entity {n}",
            "owner": owner,
            "group": group,
            "access": list(access),
            "branch": list(branch),
            "createdAt": moment,
            "updatedAt": moment,
            acl.READERS: readers,
            **(extra or {}),
        }
        for n, moment in enumerate(created)
    ]
    collection = storage.store(store)
    for start in range(0, len(docs), batch):
        await collection.insert_many(docs[start : start + batch])
    return ids
