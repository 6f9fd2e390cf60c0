"""Lists of more than one full page (10,000 entities): the cap, offsets past it, the Link to
the rest, and a full page streamed without the server holding it whole.

The entities are written straight into their own database before an app starts on it, so no
change stream (this app's or the session app's) sees ten thousand inserts.
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor

from app import entities as entities_module
from app.http import json_array_response
from app.main import create_app
from app.query import MAX_LIMIT, parse_list_query
from app.rawbatches import RawBatches
from app.storage import Storage
from app.users import principal_of
from tests.e2e.conftest import ADMIN_PASSWORD, bearer_client, create_user, make_settings
from tests.helpers import User, next_link, seed_entities, unique

pytestmark = pytest.mark.asyncio

TOTAL = MAX_LIMIT + 5
STORE = "things"
SMALL = "small"
START = datetime(2021, 3, 1, tzinfo=UTC)


class Big:
    def __init__(self, app, ids: list[ObjectId], reader):
        self.app = app
        self.ids = [str(i) for i in ids]
        self.reader = reader


@pytest.fixture(scope="module")
async def big(mongodb_url, tmp_path_factory):
    db_name = unique("bigdb")
    group = unique("readers")
    storage = Storage(mongodb_url, db_name)
    try:
        times = [START + timedelta(milliseconds=n) for n in range(TOTAL)]
        # About 600 bytes each, as real entities are: the page (6 MB of JSON) is well beyond
        # what a list holds while it reads.
        ids = await seed_entities(
            storage,
            STORE,
            "someone-else",
            times,
            group=group,
            access=["x" * 40],
            extra={"notes": "n" * 300},
        )
        # A second store of small entities whose whole page fits what a list holds.
        await seed_entities(storage, SMALL, "someone-else", times, group=group)
    finally:
        await storage.close()
    settings = make_settings(mongodb_url, tmp_path_factory.mktemp("big"), MONGODB_DB=db_name)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        client = await bearer_client(app, "admin", ADMIN_PASSWORD)
        admin = User((await client.get("/api/v1/_me")).json()["id"], "admin", "", client)
        # A plain user reading by group, so every query goes through the read filter.
        reader = await create_user(app, admin, groups=[group])
        yield Big(app, ids, reader)
        await reader.client.aclose()
        await client.aclose()


async def test_a_list_stops_at_10000_and_links_to_the_rest(big: Big):
    response = await big.reader.get(f"/api/v1/{STORE}")
    assert response.status_code == 200
    listed = response.json()
    assert len(listed) == MAX_LIMIT
    assert [e["_id"] for e in listed] == big.ids[:MAX_LIMIT]
    assert listed[0]["createdAt"] == "2021-03-01T00:00:00.000Z"
    assert listed[0]["n"] == 0 and listed[-1]["n"] == MAX_LIMIT - 1
    assert "_readers" not in response.text
    link = next_link(response)
    assert link is not None and f"after={big.ids[MAX_LIMIT - 1]}" in link
    rest = await big.reader.get(link)
    assert [e["_id"] for e in rest.json()] == big.ids[MAX_LIMIT:]
    assert next_link(rest) is None


async def test_larger_limits_are_capped(big: Big):
    response = await big.reader.get(f"/api/v1/{STORE}", params={"limit": "50000", "only": "_id"})
    assert response.json() == [{"_id": i} for i in big.ids[:MAX_LIMIT]]
    assert next_link(response) is not None


async def test_offset_10000_starts_at_the_10001st(big: Big):
    response = await big.reader.get(f"/api/v1/{STORE}", params={"offset": "10000"})
    assert [e["_id"] for e in response.json()] == big.ids[MAX_LIMIT:]
    assert response.json()[0]["n"] == 10000
    assert next_link(response) is None


async def test_a_full_page_is_streamed_not_held(big: Big):
    services = big.app.state.services
    principal = principal_of(await services.users.find(big.reader.id))
    query = parse_list_query({})

    tracemalloc.start()
    try:
        page = await services.entities.list(STORE, query, principal)
        size = chunks = 0
        async for chunk in json_array_response(page.slices).body_iterator:
            size += len(chunk)
            chunks += 1
        _, streamed_peak = tracemalloc.get_traced_memory()

        # The control: the same page held whole, as a to_list() would, must not fit the
        # bound, or the bound would prove nothing.
        tracemalloc.reset_peak()
        held = await services.storage.store(STORE).find({}, {"_readers": 0}).limit(10000).to_list()
        _, held_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (
        len(held) == MAX_LIMIT
        and page.last is not None
        and page.last.id == ObjectId(big.ids[MAX_LIMIT - 1])
    )
    assert chunks > 10  # sent as it was read, not in one piece
    assert held_peak > size, "the control no longer exceeds the JSON size"
    assert streamed_peak < size, f"peak {streamed_peak} bytes for {size} bytes of JSON"
    assert streamed_peak < held_peak / 3, f"peak {streamed_peak}, held whole {held_peak}"


@pytest.mark.parametrize(
    ("store", "only", "queries"),
    [(SMALL, ["n,name"], 1), (STORE, [], 3)],
    ids=["a page that fits what a list holds: one query", "a larger one: read again, streamed"],
)
async def test_a_full_page_is_one_query_when_it_fits(
    big: Big, store: str, only: list[str], queries: int, monkeypatch: pytest.MonkeyPatch
):
    services = big.app.state.services
    principal = principal_of(await services.users.find(big.reader.id))
    query = parse_list_query({"only": only} if only else {})
    made: list[str] = []
    for name in ("find", "find_raw_batches", "find_one", "aggregate", "count_documents"):
        original = getattr(AsyncCollection, name)

        def counted(collection, *args, _original=original, _name=name, **kwargs):
            if collection.name == store:
                made.append(_name)
            return _original(collection, *args, **kwargs)

        monkeypatch.setattr(AsyncCollection, name, counted)

    class CountedRawBatches(RawBatches):  # what the list reads its page with
        def __init__(self, collection, *args, **kwargs):
            if collection.name == store:
                made.append("raw batches")
            super().__init__(collection, *args, **kwargs)

    monkeypatch.setattr(entities_module, "RawBatches", CountedRawBatches)
    page = await services.entities.list(store, query, principal)
    listed = [document async for piece in page.slices for document in piece]
    monkeypatch.undo()
    assert len(made) == queries, made
    assert [d["n"] for d in listed] == list(range(MAX_LIMIT))
    assert page.last is not None and page.last.id == listed[-1]["_id"]
    if only:
        assert set(listed[0]) == {"_id", "n", "name"}


@pytest.mark.parametrize(
    ("params", "trips"),
    [({"limit": ["1000"]}, 1), ({"limit": ["10000"], "only": ["n,name"]}, 4)],
    ids=["1000 entities: one round trip", "10,000 entities of two fields: four"],
)
async def test_round_trips_of_a_page(
    big: Big, params: dict[str, list[str]], trips: int, monkeypatch: pytest.MonkeyPatch
):
    services = big.app.state.services
    principal = principal_of(await services.users.find(big.reader.id))
    made = 0
    original = AsyncCursor._send_message  # one call per round trip (find, getMore)

    async def counted(cursor, *args, **kwargs):
        nonlocal made
        if cursor.collection.name == SMALL:
            made += 1
        return await original(cursor, *args, **kwargs)

    monkeypatch.setattr(AsyncCursor, "_send_message", counted)
    page = await services.entities.list(SMALL, parse_list_query(params), principal)
    listed = [document async for piece in page.slices for document in piece]
    monkeypatch.undo()
    assert len(listed) == int(params["limit"][0]) and page.last is not None
    assert made == trips


async def test_a_page_that_fits_links_only_when_more_follow(big: Big):
    whole = await big.reader.get(f"/api/v1/{SMALL}", params={"only": "n"})
    assert [e["n"] for e in whole.json()] == list(range(MAX_LIMIT))
    rest = await big.reader.get(next_link(whole))
    assert [e["n"] for e in rest.json()] == list(range(MAX_LIMIT, TOTAL))
    assert next_link(rest) is None
    exact = await big.reader.get(f"/api/v1/{SMALL}", params={"offset": "5", "limit": "10000"})
    assert len(exact.json()) == MAX_LIMIT and next_link(exact) is None
