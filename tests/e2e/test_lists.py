"""``GET /api/v1/:store``: order, limit and offset, only, meta, from/to, after and the Link to
the next page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import create_user
from tests.helpers import User, assert_api_error, next_link, seed_entities, unique

pytestmark = pytest.mark.asyncio

START = datetime(2020, 1, 1, tzinfo=UTC)
HOUR_MS = 3600 * 1000
START_MS = 1577836800000


@pytest.fixture(scope="module")
async def writer(app, admin):
    user = await create_user(app, admin, groups=[unique("writers")])
    yield user
    await user.client.aclose()


async def post_many(user: User, store: str, bodies: list[dict]) -> list[dict]:
    made = []
    for body in bodies:
        response = await user.post(f"/api/v1/{store}", json=body)
        assert response.status_code == 201, response.text
        made.append(response.json())
    return made


async def hourly(app, store: str, owner: User, count: int = 5) -> list[str]:
    """``count`` entities created on the hour from 2020-01-01T00:00Z; returns their ids."""
    times = [START + timedelta(hours=i) for i in range(count)]
    ids = await seed_entities(app.state.services.storage, store, owner.id, times)
    return [str(i) for i in ids]


async def ids_of(user: User, store: str, **params) -> list[str]:
    response = await user.get(f"/api/v1/{store}", params=params)
    assert response.status_code == 200, response.text
    return [entity["_id"] for entity in response.json()]


async def test_empty_and_unknown_stores_list_nothing(writer, store):
    response = await writer.get(f"/api/v1/{store}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == []
    assert "link" not in response.headers
    made = (await post_many(writer, store, [{"a": 1}]))[0]
    await writer.delete(f"/api/v1/{store}/{made['_id']}")
    assert (await writer.get(f"/api/v1/{store}")).json() == []


async def test_list_is_oldest_first_with_whole_entities(writer, store):
    made = await post_many(writer, store, [{"i": i, "tag": {"x": [i]}} for i in range(5)])
    listed = (await writer.get(f"/api/v1/{store}")).json()
    assert listed == made
    assert [e["_id"] for e in listed] == sorted(e["_id"] for e in made)


async def test_limit_and_offset_select_a_window(app, writer, store):
    ids = await hourly(app, store, writer)
    assert await ids_of(writer, store, limit="2") == ids[:2]
    assert await ids_of(writer, store, offset="2") == ids[2:]
    assert await ids_of(writer, store, offset="1", limit="2") == ids[1:3]
    assert await ids_of(writer, store, offset="0", limit="5") == ids
    assert await ids_of(writer, store, offset="5") == []
    assert await ids_of(writer, store, offset="4", limit="10") == ids[4:]


@pytest.mark.parametrize("limit", ["10000", "10001", "99999999", "123456789012345678901234567890"])
async def test_limits_over_the_maximum_are_capped_not_refused(app, writer, store, limit):
    ids = await hourly(app, store, writer, 3)
    assert await ids_of(writer, store, limit=limit) == ids


async def test_offsets_past_the_end_give_an_empty_page(app, writer, store):
    await hourly(app, store, writer, 2)
    assert await ids_of(writer, store, offset="10000") == []
    assert await ids_of(writer, store, offset="123456789012345678901234567890") == []


@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize("value", ["-1", "-10", "1.5", "2e3", "ten", "", "0x10"])
async def test_negative_or_non_integer_limit_and_offset_are_400(writer, store, name, value):
    response = await writer.get(f"/api/v1/{store}", params={name: value})
    assert name in assert_api_error(response, 400, "BAD_REQUEST")["message"]


@pytest.mark.parametrize("name", ["limit", "offset", "only", "from", "after", "meta"])
async def test_a_parameter_given_twice_is_400(writer, store, name):
    response = await writer.get(f"/api/v1/{store}?{name}=1&{name}=1")
    assert_api_error(response, 400, "BAD_REQUEST")


async def test_only_keeps_id_and_the_named_fields(writer, store):
    bodies = [
        {"name": "A", "description": "first", "price": 1, "address": {"city": "X", "zip": "1"}},
        {"name": "B", "price": 2},
    ]
    made = await post_many(writer, store, bodies)
    response = await writer.get(f"/api/v1/{store}", params={"only": "name,description"})
    assert response.json() == [
        {"_id": made[0]["_id"], "name": "A", "description": "first"},
        {"_id": made[1]["_id"], "name": "B"},
    ]
    dotted = (await writer.get(f"/api/v1/{store}", params={"only": "address.city,price"})).json()
    assert dotted == [
        {"_id": made[0]["_id"], "price": 1, "address": {"city": "X"}},
        {"_id": made[1]["_id"], "price": 2},
    ]
    bare = (await writer.get(f"/api/v1/{store}", params={"only": "_id"})).json()
    assert bare == [{"_id": e["_id"]} for e in made]


@pytest.mark.parametrize("only", ["", "a,,b", "_readers", "a,a.b", "a.$b"])
async def test_bad_only_is_400_invalid(writer, store, only):
    response = await writer.get(f"/api/v1/{store}", params={"only": only})
    assert_api_error(response, 400, "INVALID")


async def test_meta_counts_and_shows_first_and_last(writer, store):
    empty = await writer.get(f"/api/v1/{store}", params={"meta": "true"})
    assert empty.status_code == 200
    assert empty.json() == {"count": 0, "first": None, "last": None}
    made = await post_many(writer, store, [{"i": i} for i in range(4)])
    meta = (await writer.get(f"/api/v1/{store}", params={"meta": "true"})).json()
    assert meta == {"count": 4, "first": made[0], "last": made[-1]}
    listed = (await writer.get(f"/api/v1/{store}", params={"meta": "false"})).json()
    assert listed == made


async def test_meta_respects_from_and_to(app, writer, store):
    ids = await hourly(app, store, writer)
    params = {"meta": "true", "from": str(START_MS + HOUR_MS), "to": str(START_MS + 3 * HOUR_MS)}
    meta = (await writer.get(f"/api/v1/{store}", params=params)).json()
    assert meta["count"] == 3
    assert (meta["first"]["_id"], meta["last"]["_id"]) == (ids[1], ids[3])
    assert meta["first"]["createdAt"] == "2020-01-01T01:00:00.000Z"
    assert "_readers" not in meta["first"] and "_readers" not in meta["last"]
    none = {"meta": "true", "begin": "2021-01-01T00:00"}
    assert (await writer.get(f"/api/v1/{store}", params=none)).json() == {
        "count": 0,
        "first": None,
        "last": None,
    }


@pytest.mark.parametrize(
    "params", [{"offset": "0"}, {"limit": "10"}, {"offset": "1", "limit": "1"}]
)
async def test_meta_with_offset_or_limit_is_400(writer, store, params):
    await post_many(writer, store, [{"a": 1}])
    response = await writer.get(f"/api/v1/{store}", params={"meta": "true", **params})
    assert_api_error(response, 400, "BAD_REQUEST")


@pytest.mark.parametrize(
    "moment",
    [
        str(START_MS + HOUR_MS),
        "2020-01-01T01:00",
        "2020-01-01T01:00:00",
        "2020-01-01T01:00:00.000",
        "2020-01-01T01:00:00.000000",
        "2020-01-01T01:00Z",
        "2020-01-01T03:00+02:00",
        "2020-01-01T03:00:00.000+0200",
        "2019-12-31T22:00-03:00",
    ],
)
async def test_from_and_to_bound_created_at_inclusively(app, writer, store, moment):
    ids = await hourly(app, store, writer)
    assert await ids_of(writer, store, **{"from": moment}) == ids[1:]
    assert await ids_of(writer, store, begin=moment) == ids[1:]
    assert await ids_of(writer, store, to=moment) == ids[:2]
    assert await ids_of(writer, store, end=moment) == ids[:2]
    assert await ids_of(writer, store, **{"from": moment, "to": moment}) == ids[1:2]


async def test_bounds_between_entities_and_outside_them(app, writer, store):
    ids = await hourly(app, store, writer)
    assert (
        await ids_of(writer, store, begin="2020-01-01T00:30", end="2020-01-01T02:59:59.999")
        == (ids[1:3])
    )
    assert await ids_of(writer, store, **{"from": str(START_MS + 1)}) == ids[1:]
    assert await ids_of(writer, store, to=str(START_MS - 1)) == []
    assert await ids_of(writer, store, **{"from": "2020-01-02T00:00"}) == []
    assert (
        await ids_of(writer, store, **{"from": "2020-01-01T04:00", "to": "2020-01-01T01:00"}) == []
    )


async def test_an_unencoded_plus_in_an_offset_still_reads_as_plus(app, writer, store):
    ids = await hourly(app, store, writer)
    # In a query string "+" means a space; the offset must still be +02:00, not dropped.
    response = await writer.get(f"/api/v1/{store}?from=2020-01-01T03:00+02:00")
    assert [e["_id"] for e in response.json()] == ids[1:]
    encoded = await writer.get(f"/api/v1/{store}?to=2020-01-01T03:00%2B02:00")
    assert [e["_id"] for e in encoded.json()] == ids[:2]


@pytest.mark.parametrize("name", ["from", "to", "begin", "end"])
@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2020-01-01",
        "2020-13-01T00:00",
        "2020-01-01T25:00",
        "01/01/2020",
        "1.5e12",
        "",
        "0001-01-01T00:00+01:00",
    ],
)
async def test_bad_times_are_400_invalid_naming_the_parameter(writer, store, name, value):
    response = await writer.get(f"/api/v1/{store}", params={name: value})
    body = assert_api_error(response, 400, "INVALID")
    assert body["message"].startswith(f"{name}:")


@pytest.mark.parametrize(("name", "synonym"), [("from", "begin"), ("to", "end")])
async def test_a_bound_and_its_synonym_together_are_400(writer, store, name, synonym):
    response = await writer.get(f"/api/v1/{store}", params={name: "0", synonym: "0"})
    assert_api_error(response, 400, "BAD_REQUEST")


async def test_after_continues_past_an_entity(app, writer, store):
    ids = await hourly(app, store, writer)
    assert await ids_of(writer, store, after=ids[1]) == ids[2:]
    assert await ids_of(writer, store, after=ids[1].upper()) == ids[2:]
    assert await ids_of(writer, store, after=ids[-1]) == []
    assert await ids_of(writer, store, after="000000000000000000000000") == ids
    assert await ids_of(writer, store, after=ids[0], limit="2") == ids[1:3]
    assert await ids_of(writer, store, after=ids[0], offset="1", limit="2") == ids[2:4]
    bounded = {"after": ids[1], "to": "2020-01-01T03:00"}
    assert await ids_of(writer, store, **bounded) == ids[2:4]
    assert await ids_of(writer, store, after=ids[0], begin="2020-01-01T03:00") == ids[3:]
    projected = await writer.get(f"/api/v1/{store}", params={"after": ids[3], "only": "n"})
    assert projected.json() == [{"_id": ids[4], "n": 4}]


@pytest.mark.parametrize("after", ["xyz", "65f0aaaaaaaaaaaaaaaaaaa", '{"$gt":""}', ""])
async def test_bad_after_is_400_invalid(writer, store, after):
    response = await writer.get(f"/api/v1/{store}", params={"after": after})
    assert "after" in assert_api_error(response, 400, "INVALID")["message"]


async def follow(user: User, url: str) -> tuple[list[dict], list[str]]:
    """Every entity reached by following ``rel="next"`` from ``url``, and the URLs fetched."""
    entities: list[dict] = []
    urls: list[str] = []
    next_url: str | None = url
    while next_url is not None:
        assert len(urls) < 50, "the links never end"
        urls.append(next_url)
        response = await user.get(next_url)
        assert response.status_code == 200, response.text
        entities += response.json()
        next_url = next_link(response)
    return entities, urls


async def test_links_page_through_everything_once_in_order(app, writer, store):
    ids = await hourly(app, store, writer, 7)
    entities, urls = await follow(writer, f"/api/v1/{store}?limit=3")
    assert [e["_id"] for e in entities] == ids
    assert len(urls) == 3
    assert urls[1].startswith(f"/api/v1/{store}?")
    assert f"after={ids[2]}" in urls[1] and "limit=3" in urls[1]
    assert f"after={ids[5]}" in urls[2]


async def test_a_page_that_ends_the_list_has_no_link(app, writer, store):
    ids = await hourly(app, store, writer, 4)
    first = await writer.get(f"/api/v1/{store}", params={"limit": "2"})
    assert next_link(first) is not None
    entities, urls = await follow(writer, f"/api/v1/{store}?limit=2")
    assert [e["_id"] for e in entities] == ids and len(urls) == 2
    assert next_link(await writer.get(f"/api/v1/{store}", params={"limit": "4"})) is None
    assert next_link(await writer.get(f"/api/v1/{store}", params={"limit": "9"})) is None
    assert next_link(await writer.get(f"/api/v1/{store}")) is None


async def test_links_keep_only_and_the_time_bounds(app, writer, store):
    ids = await hourly(app, store, writer, 8)
    url = f"/api/v1/{store}?limit=2&only=n&begin=2020-01-01T01:00&end=2020-01-01T06:00"
    entities, urls = await follow(writer, url)
    assert entities == [{"_id": ids[n], "n": n} for n in range(1, 7)]
    assert len(urls) == 3


async def test_links_after_an_offset_continue_from_the_page_end(app, writer, store):
    ids = await hourly(app, store, writer, 6)
    entities, _ = await follow(writer, f"/api/v1/{store}?offset=1&limit=2")
    assert [e["_id"] for e in entities] == ids[1:]


async def test_links_keep_a_to_bound_to_the_millisecond(app, writer, store):
    # A time whose float rendering is a millisecond off; the entities sit exactly on ``to``.
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=2198351869457)
    storage = app.state.services.storage
    ids = await seed_entities(storage, store, writer.id, [moment] * 3)
    url = f"/api/v1/{store}?limit=1&from=2198351869457&to=2198351869457"
    entities, urls = await follow(writer, url)
    assert [e["_id"] for e in entities] == [str(i) for i in ids]
    assert len(urls) == 3
