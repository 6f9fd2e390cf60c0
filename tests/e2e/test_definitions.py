"""Store definitions end to end: the ``_stores`` API, every rule a schema carries, defaults,
read-only and unique fields, dry runs, and a change reaching another server process."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.e2e.live import ADMIN_PASSWORD, process_env, server_process
from tests.e2e.support import raw_database
from tests.helpers import User, assert_api_error

pytestmark = pytest.mark.asyncio

CONTACTS = {
    "title": "Contacts",
    "description": "People we sell to",
    "schema": {
        "type": "object",
        "required": ["name", "email"],
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 50},
            "email": {"type": "string", "format": "email"},
            "stage": {"enum": ["lead", "won", "lost"], "default": "lead"},
            "kind": {"const": "person"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "born": {"type": "string", "format": "date"},
            "seen": {"type": "string", "format": "date-time"},
            "site": {"type": "string", "format": "uri"},
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$", "readOnly": True},
            "tags": {"type": "array", "items": {"type": "string"}},
            "score": {"$ref": "#/$defs/score"},
            "contact": {
                "type": "object",
                "required": ["phone"],
                "properties": {
                    "phone": {"type": "string", "pattern": "^[0-9+ ]+$"},
                    "country": {"type": "string", "default": "DE"},
                },
                "additionalProperties": False,
            },
        },
        "$defs": {"score": {"type": "number", "minimum": 0, "maximum": 10}},
    },
    "unique": ["email"],
}
VALID = {"name": "Ada", "email": "ada@example.com", "contact": {"phone": "+49 30 1"}}


async def define(user: User, store: str, body: dict, status: int = 200) -> dict:
    response = await user.put(f"/api/v1/_stores/{store}", json=body)
    assert response.status_code == status, response.text
    return response.json()


def errors_by_field(body: dict) -> dict[str, str]:
    return {e["field"]: e["rule"] for e in body["errors"]}


async def test_put_answers_the_stored_definition_with_versions(admin, store):
    first = await define(admin, store, CONTACTS)
    assert first["name"] == store and first["defined"] is True and first["version"] == 1
    assert first["schema"] == CONTACTS["schema"] and first["unique"] == ["email"]
    assert first["title"] == "Contacts" and first["createdAt"] == first["updatedAt"]
    await asyncio.sleep(0.01)
    second = await define(admin, store, {**CONTACTS, "title": "People"})
    assert second["version"] == 2 and second["title"] == "People"
    assert second["createdAt"] == first["createdAt"] and second["updatedAt"] > first["updatedAt"]
    fetched = (await admin.get(f"/api/v1/_stores/{store}")).json()
    assert fetched == second


async def test_stores_are_listed_with_counts_for_admins_only(admin, make_user, store):
    user = await make_user()
    plain = store + "plain"
    assert (await user.post(f"/api/v1/{plain}", json={"a": 1})).status_code == 201
    await define(admin, store, CONTACTS)
    listed = {s["name"]: s for s in (await admin.get("/api/v1/_stores")).json()}
    assert listed[store]["defined"] is True and listed[store]["version"] == 1
    assert listed[store]["title"] == "Contacts" and listed[store]["count"] == 0
    assert listed[plain] == {
        "name": plain,
        "title": None,
        "description": None,
        "defined": False,
        "version": None,
        "count": 1,
    }
    assert not any(name.startswith("_") for name in listed)
    seen = {s["name"]: s for s in (await user.get("/api/v1/_stores")).json()}
    assert "count" not in seen[store] and seen[store]["defined"] is True
    undefined = await user.get(f"/api/v1/_stores/{plain}")
    assert undefined.json() == {"name": plain, "defined": False}
    assert_api_error(await user.get(f"/api/v1/_stores/{store}none"), 404, "NOT_FOUND")
    assert_api_error(await user.get("/api/v1/_stores/bad.name"), 400, "INVALID")


async def test_non_admins_cannot_change_definitions(admin, make_user, store):
    user = await make_user()
    assert_api_error(await user.put(f"/api/v1/_stores/{store}", json=CONTACTS), 403, "FORBIDDEN")
    await define(admin, store, CONTACTS)
    assert_api_error(await user.delete(f"/api/v1/_stores/{store}"), 403, "FORBIDDEN")
    assert (await user.get(f"/api/v1/_stores/{store}")).json()["version"] == 1


async def test_valid_entities_are_stored_with_defaults(admin, make_user, store):
    await define(admin, store, CONTACTS)
    user = await make_user()
    created = await user.post(f"/api/v1/{store}", json=VALID)
    assert created.status_code == 201, created.text
    entity = created.json()
    assert entity["stage"] == "lead"  # top-level default
    assert entity["contact"] == {"phone": "+49 30 1", "country": "DE"}  # nested, object present
    assert (await user.get(f"/api/v1/{store}/{entity['_id']}")).json() == entity
    full = {
        **VALID,
        "email": "ada2@example.com",
        "stage": "won",
        "kind": "person",
        "age": 36,
        "born": "1815-12-10",
        "seen": "2026-12-01T10:00:00Z",
        "site": "https://example.com/ada",
        "code": "ADA-1",
        "tags": ["math"],
        "score": 9.5,
    }
    response = await user.post(f"/api/v1/{store}", json=full)
    assert response.status_code == 201, response.text
    assert response.json()["contact"]["country"] == "DE"


async def test_every_violation_is_reported_at_once(admin, make_user, store):
    await define(admin, store, CONTACTS)
    user = await make_user()
    bad = {
        "name": "A",
        "stage": "maybe",
        "kind": "robot",
        "age": 200,
        "born": "2020-13-01",
        "seen": "yesterday",
        "site": "not a uri",
        "code": "lower-1",
        "tags": ["ok", 5],
        "score": 11,
        "contact": {"phone": "call me", "extra": True},
        "email": "nope",
    }
    body = assert_api_error(await user.post(f"/api/v1/{store}", json=bad), 400, "INVALID")
    rules = errors_by_field(body)
    assert rules == {
        "name": "minLength",
        "email": "format",
        "stage": "enum",
        "kind": "const",
        "age": "maximum",
        "born": "format",
        "seen": "format",
        "site": "format",
        "code": "pattern",
        "tags.1": "type",
        "score": "maximum",
        "contact.phone": "pattern",
        "contact": "additionalProperties",
    }, body["errors"]
    first = body["errors"][0]
    assert body["message"] == f"{first['field']}: {first['message']}"
    missing = assert_api_error(
        await user.post(f"/api/v1/{store}", json={"contact": {}}), 400, "INVALID"
    )
    assert errors_by_field(missing) == {
        "name": "required",
        "email": "required",
        "contact.phone": "required",
    }
    wrong_type = assert_api_error(
        await user.post(f"/api/v1/{store}", json={**VALID, "age": "old"}), 400, "INVALID"
    )
    assert errors_by_field(wrong_type) == {"age": "type"}
    assert (await user.get(f"/api/v1/{store}?meta=true")).json()["count"] == 0


async def test_values_in_messages_are_cut_to_100_characters(admin, store):
    await define(admin, store, CONTACTS)
    long = "x" * 5000
    body = assert_api_error(
        await admin.post(f"/api/v1/{store}", json={**VALID, "name": long}), 400, "INVALID"
    )
    assert len(body["message"]) < 400 and "x" * 101 not in body["message"]


async def test_additional_properties_false_at_the_top(admin, store):
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": False,
    }
    await define(admin, store, {"schema": schema})
    assert (await admin.post(f"/api/v1/{store}", json={"a": 1})).status_code == 201
    # The access fields are the server's, never refused by the entity's own schema.
    ok = await admin.post(f"/api/v1/{store}", json={"a": 2, "access": ["*"], "branch": ["b"]})
    assert ok.status_code == 201, ok.text
    body = assert_api_error(
        await admin.post(f"/api/v1/{store}", json={"a": 1, "b": 2}), 400, "INVALID"
    )
    assert body["errors"][0]["rule"] == "additionalProperties"
    assert "'b'" in body["errors"][0]["message"]


async def test_patch_is_checked_on_the_entity_it_makes(admin, make_user, store):
    await define(admin, store, CONTACTS)
    user = await make_user()
    entity = (await user.post(f"/api/v1/{store}", json={**VALID, "code": "ADA-7"})).json()
    url = f"/api/v1/{store}/{entity['_id']}"
    ok = await user.patch(url, json={"age": 40, "contact.phone": "123"})
    assert ok.status_code == 200, ok.text
    assert "_rev" not in ok.json() and "_readers" not in ok.json()
    assert ok.json()["contact"] == {"phone": "123", "country": "DE"}
    for changes, field, rule in [
        ({"age": -1}, "age", "minimum"),
        ({"contact.phone": "abc"}, "contact.phone", "pattern"),
        ({"contact": {"country": "FR"}}, "contact.phone", "required"),
        ({"stage": None}, "stage", "enum"),
        ({"contact.extra": 1}, "contact", "additionalProperties"),
    ]:
        body = assert_api_error(await user.patch(url, json=changes), 400, "INVALID")
        assert errors_by_field(body) == {field: rule}, (changes, body)
    after = (await user.get(url)).json()
    assert after["age"] == 40 and after["contact"] == {"phone": "123", "country": "DE"}
    assert after["updatedAt"] == ok.json()["updatedAt"]


async def test_read_only_fields_are_set_on_create_only(admin, store):
    await define(admin, store, CONTACTS)
    entity = (await admin.post(f"/api/v1/{store}", json={**VALID, "code": "ADA-1"})).json()
    url = f"/api/v1/{store}/{entity['_id']}"
    body = assert_api_error(await admin.patch(url, json={"code": "ADA-2"}), 400, "INVALID")
    assert body["message"].startswith("code:") and errors_by_field(body) == {"code": "readOnly"}
    same = await admin.patch(url, json={"code": "ADA-1", "age": 3})  # the stored value: fine
    assert same.status_code == 200, same.text
    assert (await admin.get(url)).json()["code"] == "ADA-1"


async def test_unique_fields_refuse_duplicates_naming_the_field(admin, make_user, store):
    await define(admin, store, CONTACTS)
    first, second = await make_user(), await make_user()
    assert (await first.post(f"/api/v1/{store}", json=VALID)).status_code == 201
    body = assert_api_error(await second.post(f"/api/v1/{store}", json=VALID), 409, "CONFLICT")
    assert "email" in body["message"] and first.id not in body["message"]
    other = (await second.post(f"/api/v1/{store}", json={**VALID, "email": "b@example.com"})).json()
    url = f"/api/v1/{store}/{other['_id']}"
    assert_api_error(await second.patch(url, json={"email": VALID["email"]}), 409, "CONFLICT")
    # Entities without the field never collide (the index covers those that have it).
    schema = {"type": "object", "properties": {"sku": {"type": "string"}}}
    await define(admin, store + "x", {"schema": schema, "unique": ["sku"]})
    for _ in range(2):
        assert (await admin.post(f"/api/v1/{store}x", json={"name": "no sku"})).status_code == 201


async def test_concurrent_creates_of_one_unique_value_store_one(admin, store):
    await define(admin, store, CONTACTS)
    body = {**VALID, "email": "race@example.com"}
    responses = await asyncio.gather(*[admin.post(f"/api/v1/{store}", json=body) for _ in range(8)])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    assert (await admin.get(f"/api/v1/{store}?meta=true")).json()["count"] == 1


async def test_unique_over_existing_duplicates_keeps_the_old_definition(admin, store):
    loose = {"schema": {"type": "object"}}
    await define(admin, store, loose)
    for _ in range(2):
        await admin.post(f"/api/v1/{store}", json={"email": "same@example.com"})
    dry = await admin.put(
        f"/api/v1/_stores/{store}?dryRun=true", json={**loose, "unique": ["email"]}
    )
    assert dry.json()["duplicates"] == {"email": 1}
    body = assert_api_error(
        await admin.put(f"/api/v1/_stores/{store}", json={**loose, "unique": ["email"]}),
        409,
        "CONFLICT",
    )
    assert "email" in body["message"]
    kept = (await admin.get(f"/api/v1/_stores/{store}")).json()
    assert kept["version"] == 1 and kept["unique"] == []
    assert (
        await admin.post(f"/api/v1/{store}", json={"email": "same@example.com"})
    ).status_code == 201


async def test_indexes_follow_the_definition(admin, store, mongodb_url):
    body = {
        "schema": {"type": "object"},
        "unique": ["sku"],
        "indexes": [{"fields": [["stage", 1], ["amount", -1]]}],
    }
    await define(admin, store, body)
    async with raw_database(mongodb_url) as db:
        names = set(await db[store].index_information())
        assert {"unique:sku", "index:stage:1,amount:-1"} <= names
        await define(admin, store, {"schema": {"type": "object"}, "indexes": []})
        names = set(await db[store].index_information())
        assert not any(n.startswith(("unique:", "index:")) for n in names), names
        assert "_readers_1__id_1" in names  # the store's own indexes stay


async def test_indexed_fields_cannot_hold_arrays(admin, store):
    # The index also holds the read rule's array; MongoDB cannot index two arrays together.
    body = {"schema": {"type": "object"}, "indexes": [{"fields": [["stage", 1], ["deal.kind", 1]]}]}
    await define(admin, store, body)
    for bad, field in (({"stage": ["a"]}, "stage"), ({"deal": [{"kind": 1}]}, "deal.kind")):
        refused = assert_api_error(await admin.post(f"/api/v1/{store}", json=bad), 400, "INVALID")
        assert errors_by_field(refused) == {field: "indexed"}
    made = (await admin.post(f"/api/v1/{store}", json={"stage": "a", "deal": {"kind": 1}})).json()
    url = f"/api/v1/{store}/{made['_id']}"
    assert_api_error(await admin.patch(url, json={"deal.kind": [1]}), 400, "INVALID")
    assert (await admin.patch(url, json={"deal.kind": 2})).status_code == 200


async def test_dry_run_counts_rejects_and_changes_nothing(admin, store):
    loose = {"schema": {"type": "object"}}
    await define(admin, store, loose)
    for n in range(15):
        await admin.post(f"/api/v1/{store}", json={"n": n} if n % 3 else {"n": "text"})
    strict = {
        "schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    }
    dry = await admin.put(f"/api/v1/_stores/{store}?dryRun=true", json=strict)
    assert dry.status_code == 200, dry.text
    report = dry.json()
    assert report["dryRun"] is True and report["checked"] == 15 and report["rejected"] == 5
    assert len(report["examples"]) == 5
    assert report["examples"][0]["errors"] == [
        {"field": "n", "rule": "type", "message": report["examples"][0]["errors"][0]["message"]}
    ]
    big = {"schema": {"type": "object", "required": ["missing"]}}
    assert (
        len((await admin.put(f"/api/v1/_stores/{store}?dryRun=true", json=big)).json()["examples"])
        == 10
    )
    assert (await admin.get(f"/api/v1/_stores/{store}")).json()["version"] == 1
    assert (await admin.post(f"/api/v1/{store}", json={"n": "still text"})).status_code == 201


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "$ref"),
        ({"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}}, "$ref"),
        ({"type": "object", "properties": {"owner": {"type": "string"}}}, "owner"),
        ({"type": "object", "properties": {"_secret": {"type": "string"}}}, "_secret"),
        ({"type": "object", "required": ["createdAt"]}, "createdAt"),
        ({"type": "object", "properties": {"a": {"type": "bogus"}}}, "schema"),
        ({"type": "object", "properties": {"a": {"minLength": -1}}}, "schema"),
        ({"type": "object", "properties": {"a": {"pattern": "(?=x)y"}}}, "schema"),
        ({"type": "object", "properties": {"a": {"pattern": "("}}}, "schema"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "schema"),
        ({"type": "object", "properties": {"a.b": {}}}, "a.b"),
        ({"type": "object", "properties": {"$a": {}}}, "$a"),
        ({"type": "string"}, "object"),
        ({"properties": {}}, "object"),
        ([], "schema"),
        ({"type": "object", "$schema": "http://json-schema.org/draft-07/schema#"}, "2020-12"),
        ({"type": "object", "properties": {"a": {"$id": "https://x/y"}}}, "$id"),
        ({"type": "object", "properties": {f"p{i}": {} for i in range(501)}}, "500"),
        ({"type": "object", "properties": {"a": {"default": {"$set": 1}}}}, "a.default"),
    ],
)
async def test_refused_schemas(admin, store, schema, field):
    body = assert_api_error(
        await admin.put(f"/api/v1/_stores/{store}", json={"schema": schema}), 400, "INVALID"
    )
    assert field in body["message"], body["message"]
    assert_api_error(await admin.get(f"/api/v1/_stores/{store}"), 404, "NOT_FOUND")


async def test_deep_schemas_and_bad_definition_fields_are_refused(admin, store):
    deep: dict = {"type": "object"}
    node = deep
    for _ in range(40):
        node["properties"] = {"a": {"type": "object"}}
        node = node["properties"]["a"]
    body = assert_api_error(
        await admin.put(f"/api/v1/_stores/{store}", json={"schema": deep}), 400, "INVALID"
    )
    assert "32" in body["message"]
    schema = {"type": "object"}
    for definition, field in [
        ({"schema": schema, "unique": ["a..b"]}, "a..b"),
        ({"schema": schema, "unique": ["_id"]}, "unique.0"),
        ({"schema": schema, "unique": "a"}, "unique"),
        ({"schema": schema, "indexes": [{"fields": [["a", 2]]}]}, "indexes.0.fields.0"),
        ({"schema": schema, "indexes": [{"fields": []}]}, "indexes.0.fields"),
        ({"schema": schema, "indexes": [["a", 1]]}, "indexes.0"),
        ({"schema": schema, "other": 1}, "other"),
        ({"title": "no schema"}, "schema"),
        ({"schema": schema, "title": 5}, "title"),
    ]:
        response = await admin.put(f"/api/v1/_stores/{store}", json=definition)
        body = assert_api_error(response, 400, "INVALID")
        assert body["message"].startswith(field), (definition, body["message"])
    assert_api_error(
        await admin.put(f"/api/v1/_stores/{store}?dryRun=maybe", json={"schema": schema}),
        400,
        "INVALID",
    )


async def test_delete_stops_the_checks_and_drop_removes_entities(admin, store):
    await define(admin, store, CONTACTS)
    await admin.post(f"/api/v1/{store}", json=VALID)
    assert (await admin.delete(f"/api/v1/_stores/{store}")).status_code == 200
    assert (await admin.get(f"/api/v1/_stores/{store}")).json() == {"name": store, "defined": False}
    assert (await admin.post(f"/api/v1/{store}", json=VALID)).status_code == 201  # no unique now
    assert (await admin.post(f"/api/v1/{store}", json={"any": "thing"})).status_code == 201
    assert_api_error(await admin.delete(f"/api/v1/_stores/{store}"), 404, "NOT_FOUND")
    again = await define(admin, store, {"schema": {"type": "object"}})
    assert again["version"] == 3  # versions never repeat
    assert (await admin.delete(f"/api/v1/_stores/{store}?drop=true")).status_code == 200
    assert_api_error(await admin.get(f"/api/v1/_stores/{store}"), 404, "NOT_FOUND")
    assert (await admin.get(f"/api/v1/{store}")).json() == []
    # The store can be used again: the collection is made anew, with its indexes.
    assert (await admin.post(f"/api/v1/{store}", json={"back": True})).status_code == 201
    assert len((await admin.get(f"/api/v1/{store}")).json()) == 1


async def test_concurrent_patches_never_store_an_invalid_entity(admin, store):
    # Either field alone is fine, both together are not: two PATCHes that each pass the
    # check on what they read must not both land.
    schema = {"type": "object", "not": {"required": ["a", "b"]}}
    await define(admin, store, {"schema": schema})
    for _ in range(5):
        entity = (await admin.post(f"/api/v1/{store}", json={"n": 1})).json()
        url = f"/api/v1/{store}/{entity['_id']}"
        results = await asyncio.gather(
            admin.patch(url, json={"a": 1}), admin.patch(url, json={"b": 1})
        )
        assert sorted(r.status_code for r in results) == [200, 400], [r.text for r in results]
        final = (await admin.get(url)).json()
        assert ("a" in final) != ("b" in final)


async def test_stored_entities_stay_as_they_were_when_a_definition_changes(admin, store):
    await admin.post(f"/api/v1/{store}", json={"n": "text"})
    await define(
        admin, store, {"schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    )
    listed = (await admin.get(f"/api/v1/{store}")).json()
    assert [e["n"] for e in listed] == ["text"]


async def test_a_definition_change_reaches_another_process_within_5_s(
    admin, store, mongodb_url, tmp_path
):
    env = process_env(mongodb_url, tmp_path / "data", "e2e")
    async with (
        server_process(env, tmp_path / "server.log") as url,
        httpx.AsyncClient(base_url=url) as other,
    ):
        token = (
            await other.post(
                "/api/v1/auth/token", json={"login": "admin", "password": ADMIN_PASSWORD}
            )
        ).json()["token"]
        other.headers["Authorization"] = f"Bearer {token}"
        bad = {"name": 5}
        assert (await other.post(f"/api/v1/{store}", json=bad)).status_code == 201
        await define(admin, store, CONTACTS)
        started = time.monotonic()
        while (await other.post(f"/api/v1/{store}", json=bad)).status_code == 201:
            assert time.monotonic() - started < 5, "the other process kept the old rules"
            await asyncio.sleep(0.1)
        assert (await other.post(f"/api/v1/{store}", json=bad)).status_code == 400
        assert (await admin.delete(f"/api/v1/_stores/{store}")).status_code == 200
        started = time.monotonic()
        while (await other.post(f"/api/v1/{store}", json=bad)).status_code == 400:
            assert time.monotonic() - started < 5, "the other process kept the deleted rules"
            await asyncio.sleep(0.1)
