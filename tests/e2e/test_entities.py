"""Entity CRUD over HTTP: shapes, server-set fields, sparse PATCH, and refused input."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.helpers import User, assert_api_error

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
pytestmark = pytest.mark.asyncio


async def test_create_returns_201_with_location_and_server_fields(make_user, store):
    user = await make_user(groups=["sales", "ops"])
    response = await user.post(f"/api/v1/{store}", json={"name": "A", "n": 1, "nested": {"x": [1]}})
    assert response.status_code == 201
    entity = response.json()
    assert re.fullmatch(r"[0-9a-f]{24}", entity["_id"])
    assert response.headers["location"] == f"/api/v1/{store}/{entity['_id']}"
    assert entity["owner"] == user.id
    assert entity["group"] == "sales"  # the primary group
    assert entity["access"] == [] and entity["branch"] == []
    assert ISO_MS.fullmatch(entity["createdAt"]) and entity["createdAt"] == entity["updatedAt"]
    assert entity["name"] == "A" and entity["nested"] == {"x": [1]}
    assert "_readers" not in entity
    fetched = await user.get(response.headers["location"])
    assert fetched.status_code == 200 and fetched.json() == entity


async def test_create_takes_group_access_branch_from_body(make_user, store):
    user = await make_user(groups=["sales", "ops"])
    body = {"group": "ops", "access": ["*", "u1"], "branch": ["north"]}
    entity = (await user.post(f"/api/v1/{store}", json=body)).json()
    assert (entity["group"], entity["access"], entity["branch"]) == ("ops", ["*", "u1"], ["north"])


@pytest.mark.parametrize("field", ["_id", "owner", "createdAt", "updatedAt", "_readers", "_rev"])
async def test_create_refuses_server_fields(make_user, store, field):
    user = await make_user()
    body = assert_api_error(await user.post(f"/api/v1/{store}", json={field: "x"}), 400, "INVALID")
    assert field in body["message"]
    assert (await user.get(f"/api/v1/{store}")).json() == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"group": "not-mine"}, "group"),
        ({"access": "everyone"}, "access"),
        ({"branch": [1]}, "branch"),
        ({"$where": 1}, "$where"),
        ({"a": {"$gt": 1}}, "a.$gt"),
        ({"a": [{"b": {"$set": 1}}]}, "$set"),
        ({"a\u0000b": 1}, "a\\0b"),
        ({"a.b": 1}, "a.b"),
        ({"big": 2**63}, "big"),
        ({"": 1}, "empty"),
    ],
)
async def test_create_refuses_bad_fields(make_user, store, body, named):
    user = await make_user(groups=["mine"])
    error = assert_api_error(await user.post(f"/api/v1/{store}", json=body), 400, "INVALID")
    assert named in error["message"]
    assert (await user.get(f"/api/v1/{store}")).json() == []


async def test_create_refuses_too_deep_documents(make_user, store):
    user = await make_user()
    deep: dict = {}
    node = deep
    for _ in range(80):
        node["x"] = {}
        node = node["x"]
    assert_api_error(await user.post(f"/api/v1/{store}", json=deep), 400, "INVALID")


@pytest.mark.parametrize(
    "content", [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe", b"null", b"1e999"]
)
async def test_create_refuses_bodies_that_are_not_json_objects(make_user, store, content):
    user = await make_user()
    response = await user.post(
        f"/api/v1/{store}", content=content, headers={"Content-Type": "application/json"}
    )
    assert_api_error(response, 400, "BAD_REQUEST")


async def test_body_over_the_limit_is_413(make_user, store):
    user = await make_user()
    big = {"blob": "x" * (1024 * 1024 + 10)}
    assert_api_error(await user.post(f"/api/v1/{store}", json=big), 413, "TOO_LARGE")
    assert (await user.get(f"/api/v1/{store}")).json() == []


@pytest.mark.parametrize("name", ["1abc", "a b", "x" * 65, "_private", "a.b", "na%24me"])
async def test_bad_store_names_are_400(make_user, name):
    user = await make_user()
    assert_api_error(await user.post(f"/api/v1/{name}", json={"a": 1}), 400, "INVALID")


async def test_get_with_malformed_id_is_400_and_unknown_id_is_404(make_user, store):
    user = await make_user()
    await user.post(f"/api/v1/{store}", json={"a": 1})
    assert_api_error(await user.get(f"/api/v1/{store}/xyz"), 400, "INVALID")
    body = assert_api_error(
        await user.get(f"/api/v1/{store}/65f0aaaaaaaaaaaaaaaaaaaa"), 404, "NOT_FOUND"
    )
    assert body["tags"] == ["error_not_found"]
    assert "65f0aaaaaaaaaaaaaaaaaaaa" in body["message"] and store in body["message"]
    assert_api_error(await user.get("/api/v1/nostore/65f0aaaaaaaaaaaaaaaaaaaa"), 404, "NOT_FOUND")


async def test_get_with_only_projects(make_user, store):
    user = await make_user()
    made = (await user.post(f"/api/v1/{store}", json={"a": 1, "b": {"c": 2, "d": 3}})).json()
    got = (await user.get(f"/api/v1/{store}/{made['_id']}", params={"only": "b.c"})).json()
    assert got == {"_id": made["_id"], "b": {"c": 2}}


async def test_patch_is_sparse_and_moves_updated_at(make_user, store):
    user = await make_user()
    made = (
        await user.post(
            f"/api/v1/{store}", json={"a": 1, "b": 2, "address": {"city": "X", "zip": "1"}}
        )
    ).json()
    response = await user.patch(
        f"/api/v1/{store}/{made['_id']}", json={"b": 3, "address.city": "Y", "new": [1]}
    )
    assert response.status_code == 200
    patched = response.json()
    assert patched["a"] == 1 and patched["b"] == 3 and patched["new"] == [1]
    assert patched["address"] == {"city": "Y", "zip": "1"}
    assert patched["createdAt"] == made["createdAt"]
    assert patched["updatedAt"] > made["updatedAt"] or patched["updatedAt"] == made["updatedAt"]
    assert (await user.get(f"/api/v1/{store}/{made['_id']}")).json() == patched


async def test_patch_ignores_protected_fields_sent_back_unchanged(make_user, store):
    user = await make_user(groups=["g"])
    made = (await user.post(f"/api/v1/{store}", json={"a": 1, "access": ["x"]})).json()
    echoed = {**made, "a": 2}
    response = await user.patch(f"/api/v1/{store}/{made['_id']}", json=echoed)
    assert response.status_code == 200, response.text
    assert response.json()["a"] == 2 and response.json()["access"] == ["x"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("_id", "65f0aaaaaaaaaaaaaaaaaaaa"),
        ("owner", "someone-else"),
        ("group", "other"),
        ("access", ["*"]),
        ("branch", ["b"]),
        ("createdAt", "2001-01-01T00:00:00.000Z"),
        ("updatedAt", "2001-01-01T00:00:00.000Z"),
        ("access.0", "*"),
    ],
)
async def test_patch_refuses_changing_protected_fields(make_user, store, field, value):
    user = await make_user(groups=["g"])
    made = (await user.post(f"/api/v1/{store}", json={"a": 1})).json()
    response = await user.patch(f"/api/v1/{store}/{made['_id']}", json={field: value, "a": 9})
    assert field in assert_api_error(response, 400, "INVALID")["message"]
    assert (await user.get(f"/api/v1/{store}/{made['_id']}")).json() == made


@pytest.mark.parametrize(
    "body",
    [
        {"a": 1, "a.b": 2},
        {"x..y": 1},
        {"x.$y": 1},
        {"_readers": ["*"]},
        {"_rev": 5},
        {"v": {"$inc": 1}},
    ],
)
async def test_patch_refuses_bad_paths(make_user, store, body):
    user = await make_user()
    made = (await user.post(f"/api/v1/{store}", json={"a": {"b": 1}})).json()
    response = await user.patch(f"/api/v1/{store}/{made['_id']}", json=body)
    assert_api_error(response, 400, "INVALID")
    assert (await user.get(f"/api/v1/{store}/{made['_id']}")).json() == made


async def test_patch_into_a_non_object_is_400(make_user, store):
    user = await make_user()
    made = (await user.post(f"/api/v1/{store}", json={"a": "text"})).json()
    response = await user.patch(f"/api/v1/{store}/{made['_id']}", json={"a.b": 1})
    assert_api_error(response, 400, "INVALID")


async def test_delete_answers_the_seed_success_body(make_user, store):
    user = await make_user()
    made = (await user.post(f"/api/v1/{store}", json={"a": 1})).json()
    response = await user.delete(f"/api/v1/{store}/{made['_id']}")
    assert response.status_code == 200
    assert response.json() == {"success": True, "sucess": True}
    assert_api_error(await user.get(f"/api/v1/{store}/{made['_id']}"), 404, "NOT_FOUND")
    assert_api_error(await user.delete(f"/api/v1/{store}/{made['_id']}"), 404, "NOT_FOUND")


async def test_query_parameters_are_never_operators(make_user, store):
    user = await make_user()
    await user.post(f"/api/v1/{store}", json={"a": 1})
    response = await user.get(f"/api/v1/{store}", params={"only": "$where"})
    assert_api_error(response, 400, "INVALID")
    response = await user.get(f"/api/v1/{store}", params={"after": '{"$gt": ""}'})
    assert_api_error(response, 400, "INVALID")
    response = await user.get(f"/api/v1/{store}", params={"_readers": "x", "owner[$ne]": "1"})
    assert response.status_code == 200 and len(response.json()) == 1


async def test_store_collections_get_indexes_on_first_use(app, make_user, store):
    user = await make_user()
    await user.post(f"/api/v1/{store}", json={"a": 1})
    storage = app.state.services.storage
    indexes = await storage.store(store).index_information()
    keys = {tuple(k for k, _ in spec["key"]) for spec in indexes.values()}
    # The read rule in id order, and the from/to bound; nothing a write pays for in vain.
    assert keys == {("_id",), ("_readers", "_id"), ("createdAt",)}


async def test_list_uses_the_readers_index(app, make_user, store):
    user = await make_user(groups=["g"])
    await user.post(f"/api/v1/{store}", json={"a": 1})
    from app import acl
    from app.users import principal_of

    raw = await app.state.services.users.find(user.id)
    cursor = app.state.services.storage.store(store).find(acl.read_filter(principal_of(raw)))
    plan = str((await cursor.explain())["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in plan and "_readers" in plan


async def test_unauthenticated_entity_calls_are_401(client: httpx.AsyncClient, store):
    for method, url in [
        ("GET", f"/api/v1/{store}"),
        ("POST", f"/api/v1/{store}"),
        ("GET", f"/api/v1/{store}/65f0aaaaaaaaaaaaaaaaaaaa"),
        ("DELETE", f"/api/v1/{store}/65f0aaaaaaaaaaaaaaaaaaaa"),
    ]:
        response = await client.request(method, url, json={"a": 1})
        body = assert_api_error(response, 401, "UNAUTHORIZED")
        assert body["message"] == "Unauthorized" and body["tags"] == ["error_unauthorized"]


async def test_user_fixture_is_real(make_user):
    user: User = await make_user()
    assert (await user.get("/api/v1/_me")).json()["login"] == user.login


async def test_entities_without_readers_are_admin_only_even_for_their_owner(
    app, admin, make_user, store
):
    """Written straight into MongoDB without ``_readers``: nobody but admins may read it, so
    nobody else may change it either (404, never revealing it)."""
    from bson import ObjectId

    owner = await make_user(groups=["sales"])
    storage = app.state.services.storage
    await storage.prepare_store(store)
    entity_id = ObjectId()
    await storage.store(store).insert_one(
        {"_id": entity_id, "owner": owner.id, "group": "sales", "access": [], "branch": []}
    )
    url = f"/api/v1/{store}/{entity_id}"
    assert_api_error(await owner.get(url), 404, "NOT_FOUND")
    assert_api_error(await owner.patch(url, json={"a": 1}), 404, "NOT_FOUND")
    assert_api_error(await owner.put(f"{url}/access", json={"access": ["*"]}), 404, "NOT_FOUND")
    assert_api_error(await owner.delete(url), 404, "NOT_FOUND")
    assert (await admin.get(url)).status_code == 200
    assert "a" not in (await admin.get(url)).json()
