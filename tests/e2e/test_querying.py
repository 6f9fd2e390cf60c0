"""Querying end to end: ``where`` filters, ``sort`` with cursors, ``only`` exclusions,
``QUERY_TIMEOUT_MS`` and subscriptions that follow a filter."""

from __future__ import annotations

import asyncio
import json
import random
from urllib.parse import parse_qs, urlsplit

import pytest
from bson import ObjectId

from tests.e2e.conftest import client_for, make_settings
from tests.e2e.sockets import listening, token_of
from tests.e2e.support import running
from tests.helpers import assert_api_error, next_link

pytestmark = pytest.mark.asyncio

DEALS = [
    {"name": "d1", "stage": "won", "amount": 100, "title": "Big Deal", "tags": ["a", "b"],
     "contact": {"city": "Berlin", "zip": "10115"}, "items": [{"sku": "x", "qty": 2}],
     "flag": True, "note": None},
    {"name": "d2", "stage": "lost", "amount": 5.5, "title": "small deal (test)", "tags": [],
     "contact": {"city": "Paris"}, "items": [{"sku": "y", "qty": 1}, {"sku": "x"}],
     "flag": False},
    {"name": "d3", "stage": "new", "amount": "n/a", "title": "Other 1+1", "tags": ["b"]},
    {"name": "d4", "stage": "won", "amount": 7, "title": "DEAL", "contact": {"city": None}},
]  # fmt: skip


async def seed(user, store, entities=DEALS):
    for entity in entities:
        response = await user.post(f"/api/v1/{store}", json=entity)
        assert response.status_code == 201, response.text


async def names(user, store, where, **params) -> list[str]:
    response = await user.get(
        f"/api/v1/{store}", params={"where": json.dumps(where), "only": "name", **params}
    )
    assert response.status_code == 200, response.text
    return [e["name"] for e in response.json()]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"stage": "won"}, ["d1", "d4"]),
        ({"stage": {"_eq": "nope"}}, []),
        ({"stage": {"_neq": "won"}}, ["d2", "d3"]),
        ({"amount": {"_gt": 7}}, ["d1"]),
        ({"amount": {"_gte": 7}}, ["d1", "d4"]),
        ({"amount": {"_lt": 7}}, ["d2"]),
        ({"amount": {"_lte": 5.5}}, ["d2"]),
        ({"amount": {"_gt": "a"}}, ["d3"]),  # strings compare with strings only
        ({"amount": {"_gt": 1000}}, []),
        ({"stage": {"_in": ["lost", "new"]}}, ["d2", "d3"]),
        ({"stage": {"_nin": ["won", "new"]}}, ["d2"]),
        ({"tags": "b"}, ["d1", "d3"]),  # any element of an array
        ({"tags": {"_in": ["a"]}}, ["d1"]),
        ({"tags": {"_exists": False}}, ["d4"]),
        ({"note": {"_exists": True}}, ["d1"]),
        ({"note": {"_null": True}}, ["d1", "d2", "d3", "d4"]),
        ({"contact.city": {"_null": True}}, ["d3", "d4"]),
        ({"contact.city": {"_null": False}}, ["d1", "d2"]),
        ({"contact": {"city": "Berlin"}}, ["d1"]),  # nested form of contact.city
        ({"contact": {"city": {"_starts_with": "Par"}, "zip": {"_exists": False}}}, ["d2"]),
        ({"items.sku": "x"}, ["d1", "d2"]),
        ({"items.qty": {"_gte": 2}}, ["d1"]),
        ({"title": {"_contains": "deal"}}, ["d2"]),
        ({"title": {"_icontains": "deal"}}, ["d1", "d2", "d4"]),
        ({"title": {"_contains": "(test)"}}, ["d2"]),  # literal, not a regular expression
        ({"title": {"_contains": "1+1"}}, ["d3"]),
        ({"title": {"_starts_with": "small"}}, ["d2"]),
        ({"title": {"_starts_with": "deal"}}, []),
        ({"title": {"_contains": ".*"}}, []),
        ({"flag": True}, ["d1"]),
        ({"flag": 1}, []),  # booleans are not numbers
        ({"stage": "won", "amount": {"_lt": 50}}, ["d4"]),
        ({"_or": [{"stage": "lost"}, {"amount": 100}]}, ["d1", "d2"]),
        ({"_and": [{"stage": "won"}, {"title": {"_icontains": "big"}}]}, ["d1"]),
        ({"_not": {"stage": "won"}}, ["d2", "d3"]),
        (
            {"_or": [{"_not": {"tags": {"_exists": True}}}, {"_and": [{"flag": False}]}]},
            ["d2", "d4"],
        ),
    ],
)
async def test_every_operator(admin, store, where, expected):
    await seed(admin, store)
    assert await names(admin, store, where) == expected


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ("{nope", "where"),
        ('["a"]', "where"),
        ("{}", "where"),
        ('{"$where": "1"}', "where.$where"),
        ('{"a": {"$gt": 1}}', "where.a.$gt"),
        ('{"a": {"_regex": "x"}}', "where.a._regex"),
        ('{"_readers": "x"}', "where._readers"),
        ('{"_id": "x"}', "where._id"),
        ('{"a..b": 1}', "a..b"),
        ('{"a.0": 1}', "where.a.0"),
        ('{"a": {"_in": "x"}}', "where.a._in"),
        ('{"a": {"_gt": null}}', "where.a._gt"),
        ('{"a": {"_gt": true}}', "where.a._gt"),
        ('{"a": {"_contains": 5}}', "where.a._contains"),
        ('{"a": {"_exists": 1}}', "where.a._exists"),
        ('{"a": [1]}', "where.a._eq"),
        ('{"a": {}}', "where.a"),
        ('{"_or": []}', "where._or"),
        ('{"_not": [1]}', "where._not"),
        ('{"a": {"_or": [{"b": 1}]}}', "where.a._or"),
        ('{"createdAt": {"_gt": "yesterday"}}', "where.createdAt._gt"),
        ('{"a": 99999999999999999999}', "where.a"),
        ('{"a": {"_in": [' + ",".join(["1"] * 101) + "]}}", "where.a._in"),
        ('{"a": "' + "x" * 1025 + '"}', "where.a._eq"),
        ("{" + ",".join(f'"f{i}": 1' for i in range(51)) + "}", "where"),
        ('{"_not": {"_not": {"_not": {"_not": {"_not": {"a": 1}}}}}}', "where"),
        ('{"a": "' + "x" * 4100 + '"}', "where"),
    ],
)
async def test_refused_filters_name_the_path(admin, store, where, named):
    await seed(admin, store, DEALS[:1])
    response = await admin.get(f"/api/v1/{store}", params={"where": where})
    body = assert_api_error(response, 400, "INVALID")
    assert body["message"].startswith(named), body["message"]
    meta = await admin.get(f"/api/v1/{store}", params={"where": where, "meta": "true"})
    assert_api_error(meta, 400, "INVALID")


async def test_where_combines_with_meta_after_bounds_only_and_links(admin, store):
    await seed(admin, store, [{"n": n, "even": n % 2 == 0} for n in range(30)])
    where = json.dumps({"even": True})
    meta = (await admin.get(f"/api/v1/{store}", params={"where": where, "meta": "true"})).json()
    assert meta["count"] == 15 and meta["first"]["n"] == 0 and meta["last"]["n"] == 28
    everything = (await admin.get(f"/api/v1/{store}")).json()
    cut = everything[9]  # n = 9
    page = await admin.get(
        f"/api/v1/{store}",
        params={"where": where, "after": cut["_id"], "limit": "3", "only": "n"},
    )
    assert [e["n"] for e in page.json()] == [10, 12, 14]
    assert all(set(e) == {"_id", "n"} for e in page.json())
    link = next_link(page)
    assert link is not None and parse_qs(urlsplit(link).query)["where"] == [where]
    following = (await admin.get(link)).json()
    assert [e["n"] for e in following] == [16, 18, 20]
    bounded = await admin.get(
        f"/api/v1/{store}",
        params={
            "where": where,
            "from": everything[20]["createdAt"],
            "to": everything[25]["createdAt"],
        },
    )
    assert [e["n"] for e in bounded.json()] == [20, 22, 24]
    created = await admin.get(
        f"/api/v1/{store}",
        params={"where": json.dumps({"createdAt": {"_gte": everything[28]["createdAt"]}})},
    )
    assert [e["n"] for e in created.json()] == [28, 29]


async def test_filters_never_reveal_what_the_caller_cannot_read(admin, make_user, store):
    reader = await make_user(groups=["sales"], branches=["north"])
    outsider = await make_user()
    await seed(admin, store, [
        {"name": "mine", "secret": 1, "group": "sales"},
        {"name": "theirs", "secret": 1},
        {"name": "shared", "secret": 1, "access": [reader.id]},
        {"name": "public", "secret": 2, "access": ["*"]},
        {"name": "group-shared", "secret": 1, "group": None, "access": ["sales"]},
        {"name": "branch", "secret": 1, "group": None, "branch": ["north"]},
        {"name": "other-branch", "secret": 1, "group": None, "branch": ["south"]},
    ])  # fmt: skip
    assert await names(reader, store, {"secret": 1}) == ["mine", "shared", "group-shared", "branch"]
    assert await names(reader, store, {"branch": "south"}) == []
    assert await names(outsider, store, {"secret": {"_exists": True}}) == ["public"]
    assert await names(reader, store, {"owner": admin.id}) == [
        "mine", "shared", "public", "group-shared", "branch",
    ]  # fmt: skip
    assert await names(reader, store, {"access": reader.id}) == ["shared"]
    meta = await reader.get(
        f"/api/v1/{store}", params={"where": json.dumps({"secret": 1}), "meta": "true"}
    )
    assert meta.json()["count"] == 4
    own = (await outsider.post(f"/api/v1/{store}", json={"name": "own", "secret": 1})).json()
    assert await names(outsider, store, {"owner": outsider.id}) == ["own"]
    assert own["owner"] == outsider.id


async def test_sort_orders_ascending_descending_and_by_several_fields(admin, store):
    await seed(admin, store, [
        {"name": "a", "rank": 2, "city": "Rome"},
        {"name": "b", "rank": 1, "city": "Oslo"},
        {"name": "c", "rank": 2, "city": "Bern"},
        {"name": "d", "city": "Kyiv"},
        {"name": "e", "rank": None, "city": "Lima"},
        {"name": "f", "rank": "text", "city": "Nice"},
    ])  # fmt: skip
    url = f"/api/v1/{store}"
    by = {}
    for sort in ("rank", "-rank", "rank,city", "-rank,-city", "city", "-_id"):
        response = await admin.get(url, params={"sort": sort, "only": "name"})
        assert response.status_code == 200, response.text
        by[sort] = "".join(e["name"] for e in response.json())
    # Missing and null sort first ascending (creation order breaks ties), then numbers, then
    # strings: MongoDB's order of types.
    assert by["rank"] == "debacf"
    assert by["-rank"] == "facbde"
    assert by["rank,city"] == "debcaf"
    assert by["-rank,-city"] == "facbed"
    assert by["city"] == "cdefba"
    assert by["-_id"] == "fedcba"
    offset = await admin.get(
        url, params={"sort": "-rank", "offset": "2", "limit": "2", "only": "name"}
    )
    assert [e["name"] for e in offset.json()] == ["c", "b"]
    meta = (await admin.get(url, params={"sort": "-rank", "meta": "true"})).json()
    assert meta["first"]["name"] == "f" and meta["last"]["name"] == "e"


async def test_cursor_pages_through_a_sorted_store_without_skip_or_repeat(admin, store):
    rng = random.Random(7)
    # A non-unique sort field with mixed types and missing values.
    values = [rng.choice([1, 2, 3, 2.5, "x", "y", None, "missing"]) for _ in range(1000)]
    bodies = [{"n": n} if v == "missing" else {"n": n, "score": v} for n, v in enumerate(values)]
    for first in range(0, 1000, 25):  # within the write lane's 32 slots
        made = await asyncio.gather(
            *(admin.post(f"/api/v1/{store}", json=b) for b in bodies[first : first + 25])
        )
        assert all(r.status_code == 201 for r in made)
    expected = (
        await admin.get(f"/api/v1/{store}", params={"sort": "-score,n", "only": "n"})
    ).json()
    assert len(expected) == 1000
    seen: list[int] = []
    url: str | None = f"/api/v1/{store}?sort=-score,n&limit=37&only=n"
    pages = 0
    while url:
        response = await admin.get(url)
        assert response.status_code == 200, response.text
        seen += [e["n"] for e in response.json()]
        url = next_link(response)
        pages += 1
        if pages == 10:
            # Changes meanwhile: a new entity and a changed one may move; the others may not.
            moved = seen[0]
            target = next(e for e in expected if e["n"] == moved)
            await admin.patch(f"/api/v1/{store}/{target['_id']}", json={"score": 0})
            await admin.post(f"/api/v1/{store}", json={"n": 5000, "score": 2})
    assert pages == 28
    unchanged = [e["n"] for e in expected if e["n"] != seen[0]]
    got = [n for n in seen if n not in (seen[0], 5000)]
    assert got == unchanged  # every unchanged entity exactly once, in order
    # Pages over 1000 are streamed; their link carries a cursor too.
    assert (await admin.post(f"/api/v1/{store}", json={"n": 5001})).status_code == 201
    whole = (await admin.get(f"/api/v1/{store}", params={"sort": "-score,n", "only": "n"})).json()
    big = await admin.get(
        f"/api/v1/{store}", params={"sort": "-score,n", "only": "n", "limit": "1001"}
    )
    rest = await admin.get(next_link(big))
    assert [e["n"] for e in big.json() + rest.json()] == [e["n"] for e in whole]
    assert len(big.json()) == 1001 and next_link(rest) is None


async def test_big_sorted_pages_stream_and_link_by_cursor(admin, store):
    await seed(admin, store, [{"n": n, "g": n % 3} for n in range(30)])
    first = await admin.get(
        f"/api/v1/{store}", params={"sort": "-g", "limit": "2000", "offset": "25"}
    )
    assert [e["n"] for e in first.json()] == [15, 18, 21, 24, 27]
    assert next_link(first) is None


async def test_cursors_are_checked(admin, store):
    await seed(admin, store, [{"n": n} for n in range(5)])
    response = await admin.get(f"/api/v1/{store}", params={"sort": "n", "limit": "2"})
    link = next_link(response)
    assert link is not None
    cursor = parse_qs(urlsplit(link).query)["cursor"][0]
    base = f"/api/v1/{store}"
    body, _, mac = cursor.partition(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    for params, field in [
        ({"sort": "n", "cursor": tampered}, "cursor"),
        ({"sort": "n", "cursor": "garbage"}, "cursor"),
        ({"sort": "-n", "cursor": cursor}, "cursor"),
        ({"cursor": cursor}, "cursor"),
        ({"sort": "n", "after": str(ObjectId())}, "after"),
        ({"sort": "a,b,c,d,e"}, "sort"),
        ({"sort": "a,a"}, "sort"),
        ({"sort": "_readers"}, "sort"),
        ({"sort": "-"}, "sort"),
    ]:
        body_ = assert_api_error(await admin.get(base, params=params), 400, "INVALID")
        assert body_["message"].startswith(field), (params, body_["message"])
    other = f"/api/v1/{store}x"
    await admin.post(other, json={"n": 1})
    foreign = await admin.get(other, params={"sort": "n", "cursor": cursor})
    assert_api_error(foreign, 400, "INVALID")
    assert [e["n"] for e in (await admin.get(link)).json()] == [2, 3]


async def test_only_exclusions(admin, store):
    made = (
        await admin.post(f"/api/v1/{store}", json={"a": 1, "notes": "long", "b": {"c": 1, "d": 2}})
    ).json()
    url = f"/api/v1/{store}"
    listed = (await admin.get(url, params={"only": "-notes,-b.c"})).json()
    assert listed[0] == {k: v for k, v in made.items() if k != "notes"} | {"b": {"d": 2}}
    one = (await admin.get(f"{url}/{made['_id']}", params={"only": "-notes"})).json()
    assert "notes" not in one and one["a"] == 1 and one["owner"] == made["owner"]
    for only in ("a,-notes", "-_id", "-_readers"):
        assert_api_error(await admin.get(url, params={"only": only}), 400, "INVALID")
    meta = (await admin.get(url, params={"only": "-notes", "meta": "true"})).json()
    assert "notes" not in meta["first"] and meta["first"]["a"] == 1


async def test_a_query_past_query_timeout_ms_is_a_504_that_says_what_to_do(
    admin, settings, store, tmp_path
):
    await seed(admin, store, [{"n": n, "text": f"entity {n}"} for n in range(200)])
    slow = make_settings(settings.mongodb_url, tmp_path, QUERY_TIMEOUT_MS="1")
    async with running(slow) as other, client_for(other) as client:
        client.headers["Authorization"] = admin.client.headers["Authorization"]
        assert (await client.get("/api/v1/_me")).status_code == 200  # credential now cached
        where = json.dumps({"_or": [{"text": {"_icontains": "9"}}, {"n": {"_gt": 150}}]})
        response = await client.get(f"/api/v1/{store}", params={"where": where})
        body = assert_api_error(response, 504, "QUERY_TIMEOUT")
        assert "index" in body["message"] and "QUERY_TIMEOUT_MS" in body["message"]
        meta = await client.get(f"/api/v1/{store}", params={"where": where, "meta": "true"})
        assert_api_error(meta, 504, "QUERY_TIMEOUT")
        # Point reads keep their own deadline.
        first = (await admin.get(f"/api/v1/{store}", params={"limit": "1"})).json()[0]
        assert (await client.get(f"/api/v1/{store}/{first['_id']}")).status_code == 200


async def test_a_filter_on_a_defined_index_uses_it(app, admin, make_user, store):
    definition = {"schema": {"type": "object"}, "indexes": [{"fields": [["stage", 1]]}]}
    assert (await admin.put(f"/api/v1/_stores/{store}", json=definition)).status_code == 200
    user = await make_user(groups=["g"])
    await seed(user, store, [{"stage": s} for s in ("won", "lost", "new")])
    from app import acl
    from app.query import parse_list_query
    from app.users import principal_of

    reader = principal_of(await app.state.services.users.find(user.id))
    listed = parse_list_query({"where": ['{"stage": "won"}']})
    query = {**acl.read_filter(reader), **listed.bounds()}  # as Entities.list builds it
    plan = (await app.state.services.storage.store(store).find(query).explain())["queryPlanner"]
    assert "stage" in str(plan["winningPlan"]) and "IXSCAN" in str(plan["winningPlan"])


async def test_subscriptions_follow_a_filter_with_enter_and_leave(live, make_user, store):
    user = await make_user(groups=["g"])
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        ack = await socket.subscribe(store=store, where={"stage": "won"}, only="-notes")
        assert ack["success"] is True, ack
        cold = (await user.post(f"/api/v1/{store}", json={"stage": "new", "notes": "x"})).json()
        hot = (await user.post(f"/api/v1/{store}", json={"stage": "won", "notes": "x"})).json()
        event = await socket.next()
        assert event["op"] == "create" and event["id"] == hot["_id"]
        assert "notes" not in event["entity"] and event["entity"]["stage"] == "won"
        await user.patch(f"/api/v1/{store}/{cold['_id']}", json={"stage": "won"})
        event = await socket.next()
        assert event["op"] == "enter" and event["id"] == cold["_id"]
        await user.patch(f"/api/v1/{store}/{hot['_id']}", json={"amount": 5})
        event = await socket.next()
        assert event["op"] == "update" and event["entity"]["amount"] == 5
        await user.patch(f"/api/v1/{store}/{hot['_id']}", json={"stage": "lost"})
        event = await socket.next()
        assert event["op"] == "leave" and event["id"] == hot["_id"] and "entity" not in event
        await user.patch(f"/api/v1/{store}/{hot['_id']}", json={"amount": 6})  # still out
        await user.delete(f"/api/v1/{store}/{hot['_id']}")  # did not match before: nothing
        await user.delete(f"/api/v1/{store}/{cold['_id']}")
        event = await socket.next()
        assert event["op"] == "delete" and event["id"] == cold["_id"]
        await socket.nothing()
        last = event["resume"]
        for name in ("bad", "ok"):
            await user.post(f"/api/v1/{store}", json={"stage": "won" if name == "ok" else "x"})
    # A resume replays with the filter too.
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        ack = await socket.subscribe(store=store, where={"stage": "won"}, resume=last)
        assert ack["success"] is True
        event = await socket.next()
        assert event["op"] == "create" and event["entity"]["stage"] == "won"
        await socket.nothing()
        for where, field in [
            ({"$gt": 1}, "where.$gt"),
            ({"a": {"_bad": 1}}, "where.a._bad"),
            ("x", "where"),
        ]:
            refused = await socket.subscribe(store=store, where=where)
            assert refused["success"] is False and refused["message"].startswith(field), refused


async def test_cursor_paging_by_time_and_nested_fields(admin, store):
    await seed(admin, store, [{"n": n, "deal": {"size": n % 2}} for n in range(7)])
    for sort, expected in (
        ("-createdAt", None),  # creates in one millisecond tie; the id breaks the tie
        ("deal.size,-n", [6, 4, 2, 0, 5, 3, 1]),
    ):
        if expected is None:
            whole = await admin.get(f"/api/v1/{store}", params={"sort": sort, "only": "n"})
            expected = [e["n"] for e in whole.json()]
            assert sorted(expected) == list(range(7)) and expected[0] == 6
        seen: list[int] = []
        url: str | None = f"/api/v1/{store}?sort={sort}&limit=2&only=n"
        while url:
            response = await admin.get(url)
            assert response.status_code == 200, response.text
            seen += [e["n"] for e in response.json()]
            url = next_link(response)
        assert seen == expected, sort
