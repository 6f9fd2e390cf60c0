"""Who may read, change and re-grant an entity: the access matrix over every principal and
operation, readable-only lists and meta, access changes taking effect, and ``_readers``
never leaving the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import create_user
from tests.helpers import User, assert_api_error, next_link, unique

pytestmark = pytest.mark.asyncio


@dataclass
class Cast:
    """Users sharing one module: ``own`` is a group only the owner is in, ``team`` a group
    the owner shares with ``member``, ``crew`` a group only ``crew_member`` is in."""

    own: str
    team: str
    crew: str
    branch: str
    owner: User
    member: User
    named: User
    crew_member: User
    anyone: User
    brancher: User
    stranger: User
    admin: User

    def grant_for(self, principal: str) -> dict[str, Any]:
        """Access fields of an entity created by the owner to test ``principal``."""
        grants: dict[str, dict[str, Any]] = {
            "owner": {"group": self.own},
            "member": {"group": self.team},
            "named": {"group": self.own, "access": [self.named.id]},
            "crew": {"group": self.own, "access": [self.crew]},
            "anyone": {"group": self.own, "access": ["*"]},
            "brancher": {"group": self.own, "branch": [self.branch]},
            # Shared with others, but nothing names the stranger.
            "stranger": {
                "group": self.team,
                "access": [self.named.id, self.crew],
                "branch": [self.branch],
            },
            "admin": {"group": self.own},
        }
        return grants[principal]

    def user(self, principal: str) -> User:
        return self.crew_member if principal == "crew" else getattr(self, principal)


@pytest.fixture(scope="module")
async def cast(app, admin):
    own, team, crew, branch = unique("own"), unique("team"), unique("crew"), unique("branch")
    users = [
        await create_user(app, admin, groups=groups, branches=branches)
        for groups, branches in [
            ([own, team], []),
            ([team], []),
            ([], []),
            ([crew], []),
            ([], []),
            ([], [branch]),
            ([unique("elsewhere")], [unique("far")]),
        ]
    ]
    owner, member, named, crew_member, anyone, brancher, stranger = users
    yield Cast(
        own,
        team,
        crew,
        branch,
        owner,
        member,
        named,
        crew_member,
        anyone,
        brancher,
        stranger,
        admin,
    )
    for user in users:
        await user.client.aclose()


# The expected outcome per principal: read, write (PATCH and DELETE), access change.
READ, WRITE, GRANT = "read", "write", "grant"
EXPECTED = {
    "owner": {READ: 200, WRITE: 200, GRANT: 200},
    "member": {READ: 200, WRITE: 200, GRANT: 403},
    "named": {READ: 200, WRITE: 403, GRANT: 403},
    "crew": {READ: 200, WRITE: 403, GRANT: 403},
    "anyone": {READ: 200, WRITE: 403, GRANT: 403},
    "brancher": {READ: 200, WRITE: 403, GRANT: 403},
    "stranger": {READ: 404, WRITE: 404, GRANT: 404},
    "admin": {READ: 200, WRITE: 200, GRANT: 200},
}
OPERATIONS = ["get", "list", "meta", "patch", "delete", "access"]


def assert_refused(response: httpx.Response, status: int) -> None:
    if status == 403:
        body = assert_api_error(response, 403, "FORBIDDEN")
        assert body["tags"] == ["error_credentials", "error_forbidden"]
    else:
        body = assert_api_error(response, 404, "NOT_FOUND")
        assert body["tags"] == ["error_not_found"]
    assert "_readers" not in response.text


def no_readers(response: httpx.Response) -> None:
    assert "_readers" not in response.text


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("principal", list(EXPECTED))
async def test_access_matrix(cast: Cast, store, principal, operation):
    grant = cast.grant_for(principal)
    created = await cast.owner.post(f"/api/v1/{store}", json={"note": "original", **grant})
    assert created.status_code == 201, created.text
    entity = created.json()
    url = f"/api/v1/{store}/{entity['_id']}"
    caller = cast.user(principal)
    expected = EXPECTED[principal]
    readable = expected[READ] == 200

    if operation == "get":
        response = await caller.get(url)
        if readable:
            assert response.status_code == 200 and response.json() == entity
        else:
            assert_refused(response, 404)
        no_readers(response)
        return
    if operation == "list":
        response = await caller.get(f"/api/v1/{store}")
        assert response.status_code == 200
        assert response.json() == ([entity] if readable else [])
        no_readers(response)
        return
    if operation == "meta":
        response = await caller.get(f"/api/v1/{store}", params={"meta": "true"})
        assert response.status_code == 200
        shown = entity if readable else None
        assert response.json() == {"count": int(readable), "first": shown, "last": shown}
        no_readers(response)
        return

    if operation == "patch":
        response = await caller.patch(url, json={"note": "changed"})
        status = expected[WRITE]
    elif operation == "delete":
        response = await caller.delete(url)
        status = expected[WRITE]
    else:
        response = await caller.put(f"{url}/access", json={"branch": ["granted"]})
        status = expected[GRANT]

    after = await cast.owner.get(url)
    if status != 200:
        assert_refused(response, status)
        assert after.json() == entity  # nothing changed
        return
    assert response.status_code == 200, response.text
    no_readers(response)
    if operation == "patch":
        assert response.json()["note"] == "changed" and after.json() == response.json()
    elif operation == "delete":
        assert response.json() == {"success": True, "sucess": True}
        assert_refused(after, 404)
    else:
        assert response.json() == after.json()
        assert {**after.json(), "updatedAt": None} == {
            **entity,
            "branch": ["granted"],
            "updatedAt": None,
        }


async def test_lists_meta_and_paging_show_only_readable_entities(cast: Cast, store):
    owner, named = cast.owner, cast.named
    bodies = [
        {"i": 0, "group": cast.own},
        {"i": 1, "group": cast.own, "access": [named.id]},
        {"i": 2, "group": cast.own},
        {"i": 3, "group": cast.own, "access": ["*"]},
        {"i": 4, "group": cast.own, "branch": [cast.branch]},
        {"i": 5, "group": cast.own},
    ]
    made = [(await owner.post(f"/api/v1/{store}", json=body)).json() for body in bodies]

    assert (await owner.get(f"/api/v1/{store}")).json() == made
    assert (await cast.admin.get(f"/api/v1/{store}")).json() == made
    assert (await named.get(f"/api/v1/{store}")).json() == [made[1], made[3]]
    assert (await cast.brancher.get(f"/api/v1/{store}")).json() == [made[3], made[4]]
    assert (await cast.stranger.get(f"/api/v1/{store}")).json() == [made[3]]

    meta = (await named.get(f"/api/v1/{store}", params={"meta": "true"})).json()
    assert meta == {"count": 2, "first": made[1], "last": made[3]}
    meta = (await cast.stranger.get(f"/api/v1/{store}", params={"meta": "true"})).json()
    assert meta == {"count": 1, "first": made[3], "last": made[3]}
    meta = (await cast.admin.get(f"/api/v1/{store}", params={"meta": "true"})).json()
    assert meta == {"count": 6, "first": made[0], "last": made[5]}

    assert (await named.get(f"/api/v1/{store}", params={"offset": "1"})).json() == [made[3]]
    first = await named.get(f"/api/v1/{store}", params={"limit": "1"})
    assert first.json() == [made[1]]
    link = next_link(first)
    assert link is not None and f"after={made[1]['_id']}" in link
    second = await named.get(link)
    assert second.json() == [made[3]] and next_link(second) is None


async def test_granting_and_revoking_change_what_is_seen(cast: Cast, store):
    owner, stranger = cast.owner, cast.stranger
    entity = (await owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}"

    async def sees() -> bool:
        got = await stranger.get(url)
        listed = (await stranger.get(f"/api/v1/{store}")).json()
        meta = (await stranger.get(f"/api/v1/{store}", params={"meta": "true"})).json()
        assert (got.status_code == 200) is (listed != []) is (meta["count"] == 1)
        if got.status_code != 200:
            assert_refused(got, 404)
        return got.status_code == 200

    assert not await sees()
    for grant in (
        {"access": [stranger.id]},
        {"access": ["*"]},
        {"access": [stranger.groups[0]]},
        {"branch": [stranger.branches[0]]},
    ):
        granted = await owner.put(f"{url}/access", json=grant)
        assert granted.status_code == 200, granted.text
        assert await sees()
        # Reading is not writing.
        assert_refused(await stranger.patch(url, json={"x": 1}), 403)
        revoked = await owner.put(f"{url}/access", json={"access": [], "branch": []})
        assert revoked.status_code == 200
        assert not await sees()
        assert_refused(await stranger.patch(url, json={"x": 1}), 404)


async def test_moving_an_entity_to_a_group_grants_its_members_write(cast: Cast, store):
    owner, member = cast.owner, cast.member
    entity = (await owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}"
    assert_refused(await member.patch(url, json={"x": 1}), 404)
    moved = await owner.put(f"{url}/access", json={"group": cast.team})
    assert moved.status_code == 200 and moved.json()["group"] == cast.team
    assert (await member.patch(url, json={"x": 1})).json()["x"] == 1
    assert_refused(await member.put(f"{url}/access", json={"group": cast.own}), 403)
    back = await owner.put(f"{url}/access", json={"group": cast.own})
    assert back.status_code == 200
    assert_refused(await member.get(url), 404)
    assert (await member.get(f"/api/v1/{store}")).json() == []


@pytest.mark.parametrize("group", ["not-my-group", "", 5, ["x"]])
async def test_owner_may_only_move_to_their_own_groups(cast: Cast, store, group):
    entity = (await cast.owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}"
    response = await cast.owner.put(f"{url}/access", json={"group": group})
    assert assert_api_error(response, 400, "INVALID")["message"].startswith("group")
    assert (await cast.owner.get(url)).json() == entity


async def test_owner_sets_access_and_branch_lists(cast: Cast, store):
    entity = (await cast.owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}/access"
    body = {"group": cast.own, "access": ["a", "*", "a"], "branch": ["b1", "b2"]}
    response = await cast.owner.put(url, json=body)
    assert response.status_code == 200
    changed = response.json()
    assert (changed["owner"], changed["group"]) == (cast.owner.id, cast.own)
    assert (changed["access"], changed["branch"]) == (["a", "*"], ["b1", "b2"])
    assert changed["createdAt"] == entity["createdAt"]
    # Keeping the owner as it is is not changing it.
    assert (await cast.owner.put(url, json={"owner": cast.owner.id})).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"name": "x"}, {"_readers": ["a:*"]}, {"createdAt": 0}, {"access": [], "extra": 1}],
)
async def test_access_change_refuses_unknown_keys(cast: Cast, store, body):
    entity = (await cast.owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}"
    assert_api_error(await cast.owner.put(f"{url}/access", json=body), 400, "INVALID")
    assert (await cast.owner.get(url)).json() == entity


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"access": "*"}, "access"),
        ({"access": [1]}, "access"),
        ({"branch": [""]}, "branch"),
        ({"branch": None}, "branch"),
    ],
)
async def test_access_change_refuses_bad_lists(cast: Cast, store, body, named):
    entity = (await cast.owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}/access"
    assert (
        named in assert_api_error(await cast.owner.put(url, json=body), 400, "INVALID")["message"]
    )


async def test_access_change_needs_a_json_object_and_an_existing_entity(cast: Cast, store):
    entity = (await cast.owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}/access"
    assert_api_error(await cast.owner.put(url, json=["*"]), 400, "BAD_REQUEST")
    missing = f"/api/v1/{store}/65f0aaaaaaaaaaaaaaaaaaaa/access"
    assert_refused(await cast.owner.put(missing, json={"access": []}), 404)
    assert_api_error(await cast.owner.put(f"/api/v1/{store}/xyz/access", json={}), 400, "INVALID")


async def test_only_an_admin_changes_the_owner(cast: Cast, store):
    owner, stranger, admin = cast.owner, cast.stranger, cast.admin
    entity = (await owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}"

    refused = await owner.put(f"{url}/access", json={"owner": stranger.id})
    assert_refused(refused, 403)
    assert (await owner.get(url)).json() == entity
    assert_refused(await stranger.get(url), 404)

    moved = await admin.put(f"{url}/access", json={"owner": stranger.id})
    assert moved.status_code == 200, moved.text
    assert moved.json()["owner"] == stranger.id
    no_readers(moved)
    # The new owner reads, writes and re-grants; the old one keeps only what the group gives.
    assert (await stranger.get(url)).json()["owner"] == stranger.id
    assert (await stranger.patch(url, json={"x": 1})).status_code == 200
    regrant = await stranger.put(f"{url}/access", json={"access": ["*"]})
    assert regrant.status_code == 200
    assert (await owner.patch(url, json={"x": 2})).status_code == 200  # still in the group
    assert_refused(await owner.put(f"{url}/access", json={"access": []}), 403)


@pytest.mark.parametrize("new_owner", ["65f0aaaaaaaaaaaaaaaaaaaa", "not-an-id", "", 7, None])
async def test_admin_cannot_give_an_entity_to_a_nonexistent_user(cast: Cast, store, new_owner):
    entity = (await cast.owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}"
    response = await cast.admin.put(f"{url}/access", json={"owner": new_owner})
    assert assert_api_error(response, 400, "INVALID")["message"].startswith("owner")
    assert (await cast.owner.get(url)).json() == entity


async def test_admin_may_set_any_group(cast: Cast, store):
    entity = (await cast.owner.post(f"/api/v1/{store}", json={"group": cast.own})).json()
    url = f"/api/v1/{store}/{entity['_id']}"
    response = await cast.admin.put(f"{url}/access", json={"group": cast.crew})
    assert response.status_code == 200 and response.json()["group"] == cast.crew
    assert (await cast.crew_member.patch(url, json={"x": 1})).status_code == 200


async def test_readers_never_leave_the_server(cast: Cast, store):
    owner = cast.owner
    created = await owner.post(
        f"/api/v1/{store}", json={"group": cast.own, "access": ["*"], "n": {"m": 1}}
    )
    entity_id = created.json()["_id"]
    url = f"/api/v1/{store}/{entity_id}"
    responses = [
        created,
        await owner.get(url),
        await owner.get(url, params={"only": "n.m"}),
        await owner.get(f"/api/v1/{store}"),
        await owner.get(f"/api/v1/{store}", params={"only": "n,owner"}),
        await owner.get(f"/api/v1/{store}", params={"limit": "1", "after": "0" * 24}),
        await owner.get(f"/api/v1/{store}", params={"meta": "true"}),
        await owner.get(f"/api/v1/{store}", params={"meta": "true", "only": "n"}),
        await cast.stranger.get(f"/api/v1/{store}"),
        await cast.admin.get(f"/api/v1/{store}"),
        await cast.admin.get(url),
        await owner.patch(url, json={"n.m": 2}),
        await owner.put(f"{url}/access", json={"access": ["*", cast.named.id]}),
        await cast.admin.put(f"{url}/access", json={"branch": ["b"]}),
    ]
    for response in responses:
        assert response.status_code in (200, 201), response.text
        assert "_readers" not in response.text
        assert "a:*" not in response.text and f"u:{owner.id}" not in response.text
    forbidden = await owner.get(url, params={"only": "_readers"})
    assert_api_error(forbidden, 400, "INVALID")
    assert_api_error(
        await owner.get(f"/api/v1/{store}", params={"only": "_readers"}), 400, "INVALID"
    )


async def test_the_rule_checked_in_hand_is_the_query_rule(app, store):
    """``can_read``/``can_write`` on a fetched entity (point reads and writes) select exactly
    what ``read_filter``/``write_filter`` select in the database (lists, meta), on odd data too."""
    from bson import ObjectId

    from app import acl

    storage = app.state.services.storage
    await storage.prepare_store(store)
    users = [
        acl.Principal("u1", "u1", groups=("g1", "g2"), branches=("b1",)),
        acl.Principal("u2", "u2", groups=("g2",)),
        acl.Principal("u3", "u3"),
        acl.Principal("root", "root", admin=True),
    ]
    shapes = [
        {"owner": "u1", "group": "g1", "access": [], "branch": []},
        {"owner": "u2", "group": "g2", "access": ["u3"], "branch": []},
        {"owner": "u3", "group": None, "access": ["*"], "branch": []},
        {"owner": "u2", "group": "g9", "access": ["g1"], "branch": ["b1"]},
        {"owner": "x", "group": "g2", "access": [], "branch": []},
        {"owner": ["u1"], "group": ["g2"], "access": [], "branch": []},  # another program's
    ]
    documents = []
    for shape in shapes:
        for readers in (acl.readers_of_entity(shape), None, "u:u1", ["g:g2", {"x": 1}]):
            document = {"_id": ObjectId(), **shape}
            if readers is not None:
                document[acl.READERS] = readers
            documents.append(document)
    await storage.store(store).insert_many(documents)
    for user in users:
        for document in documents:
            selector = {"_id": document["_id"]}
            readable = await storage.store(store).find_one({**selector, **acl.read_filter(user)})
            writable = await storage.store(store).find_one({**selector, **acl.write_filter(user)})
            assert acl.can_read(user, document) == (readable is not None), (user, document)
            # In hand the write rule may only be stricter (odd shapes), never looser.
            assert not acl.can_write(user, document) or writable is not None, (user, document)
            if isinstance(document["owner"], str) and isinstance(document.get(acl.READERS), list):
                assert acl.can_write(user, document) == (writable is not None), (user, document)


async def test_explain_says_who_may_read_and_write_and_why(admin, make_user, store):
    seller = await make_user(groups=["sales"], branches=["north"])
    other = await make_user()
    made = (
        await admin.post(
            f"/api/v1/{store}", json={"group": "sales", "access": [other.id], "branch": ["north"]}
        )
    ).json()
    url = f"/api/v1/{store}/{made['_id']}/_explain"
    mine = (await seller.post(f"/api/v1/{store}", json={"a": 1})).json()

    seen = (await admin.get(url, params={"user": seller.id})).json()
    assert seen["read"] and seen["write"] and not seen["changeAccess"]
    assert seen["readVia"] == ["branch", "group"] and seen["writeVia"] == ["group"]
    seen = (await admin.get(url, params={"user": other.id})).json()
    assert seen["read"] and not seen["write"] and seen["readVia"] == ["access"]
    own = f"/api/v1/{store}/{mine['_id']}/_explain"
    seen = (await admin.get(own, params={"user": seller.id})).json()
    assert seen["changeAccess"] and "owner" in seen["readVia"] and "owner" in seen["writeVia"]
    seen = (await admin.get(own, params={"user": other.id})).json()
    assert seen == {
        "user": other.id, "login": other.login, "read": False, "write": False,
        "changeAccess": False, "readVia": [], "writeVia": [],
    }  # fmt: skip
    assert (await admin.get(url, params={"user": admin.id})).json()["readVia"] == ["admin"]
    # The answer is what the API does: the same user's own requests agree.
    assert (await other.get(f"/api/v1/{store}/{made['_id']}")).status_code == 200
    assert (await other.patch(f"/api/v1/{store}/{made['_id']}", json={"a": 2})).status_code == 403
    assert_api_error(await seller.get(url, params={"user": seller.id}), 403, "FORBIDDEN")
    assert_api_error(await admin.get(url), 400, "INVALID")
    assert_api_error(await admin.get(url, params={"user": "nobody"}), 404, "NOT_FOUND")
