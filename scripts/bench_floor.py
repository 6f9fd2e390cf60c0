"""The floor of ``scripts/bench --floor``: the least an HTTP server on this project's stack could
spend per request. A bare Starlette app, served by uvicorn with uvloop and httptools as the
project is, whose handlers make the raw driver's database calls of ``scripts/bench_raw.py``
and answer with the JSON of what they got: no auth, no access rule, no admission, no checks.

``python -m uvicorn --app-dir scripts bench_floor:app`` with ``FLOOR_MONGODB_URL``,
``FLOOR_DB`` and ``FLOOR_STORE`` set. Not part of the product; never serve it.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from bson import ObjectId
from pymongo import AsyncMongoClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STORE = os.environ.get("FLOOR_STORE", "bench")
_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
    os.environ.get("FLOOR_MONGODB_URL", "mongodb://127.0.0.1:27017")
)
_collection = _client[os.environ.get("FLOOR_DB", "platform")][STORE]


def _json(document: Any, status: int = 200) -> Response:
    body = orjson.dumps(document, default=str)
    return Response(body, status_code=status, media_type="application/json")


async def get(request: Request) -> Response:
    found = await _collection.find_one({"_id": ObjectId(request.path_params["entity_id"])})
    return _json(found) if found is not None else _json({"error": "not found"}, 404)


async def post(request: Request) -> Response:
    body = orjson.loads(await request.body())
    moment = datetime.now(UTC)
    document = {**body, "owner": "u", "group": None, "branch": [], "createdAt": moment,
                "updatedAt": moment, "_readers": ["a:*", "u:u"]}  # fmt: skip
    await _collection.insert_one(document)
    return _json(document, 201)


async def patch(request: Request) -> Response:
    entity_id = ObjectId(request.path_params["entity_id"])
    changes = {**orjson.loads(await request.body()), "updatedAt": datetime.now(UTC)}
    await _collection.update_one({"_id": entity_id}, {"$set": changes})
    return _json(await _collection.find_one({"_id": entity_id}))


@asynccontextmanager
async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
    yield
    await _client.close()


app = Starlette(
    routes=[
        Route(f"/api/v1/{STORE}", post, methods=["POST"]),
        Route(f"/api/v1/{STORE}/{{entity_id}}", get, methods=["GET"]),
        Route(f"/api/v1/{STORE}/{{entity_id}}", patch, methods=["PATCH"]),
    ],
    lifespan=lifespan,
)
