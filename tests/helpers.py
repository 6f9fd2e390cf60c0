"""Assertions and small clients shared by the end-to-end tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx

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
