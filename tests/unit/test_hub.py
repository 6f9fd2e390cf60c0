"""The hub's routing decisions and the change source's post-image, without a database."""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import pytest
from bson import ObjectId
from bson.timestamp import Timestamp

from app.acl import Principal, readers_of
from app.errors import Invalid, ResumeExpired
from app.query import Only
from app.realtime.changes import Change, Position, ResumeTokens, apply_update
from app.realtime.events import Rendered, exclude, project
from app.realtime.hub import Client, Subscription, event_for

OWNER = Principal("owner1", "owner", groups=("team",))
STRANGER = Principal("stranger1", "stranger", groups=("elsewhere",))
ADMIN = Principal("admin1", "admin", admin=True)
TOKENS = ResumeTokens("a test secret")


class _Peer:
    def __init__(self, principal: Principal):
        self.principal = principal

    async def emit(self, event: str, data: dict[str, Any]) -> None:
        return None

    async def emit_encoded(self, event: str, data: str) -> None:
        return None

    def emit_now(self, event: str, data: str) -> bool:
        return False

    async def close(self) -> None:
        return None


def _doc(access: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    doc = {"_id": ObjectId("65f0aaaaaaaaaaaaaaaaaaaa"), "owner": "owner1", "group": "team"}
    doc.update(access=access or [], branch=[], **fields)
    doc["_readers"] = readers_of("owner1", "team", access or [], [])
    return doc


def _change(op: str, before: Any, after: Any) -> Change:
    position = Position(Timestamp(1700000000, 1), "00ff")
    return Change(op, "orders", ObjectId("65f0aaaaaaaaaaaaaaaaaaaa"), before, after, 1, position)


async def _event(principal: Principal, change: Change, only=None) -> dict[str, Any] | None:
    client = Client(_Peer(principal))
    try:
        sub = Subscription("s1", client, "orders", None, only)
        return event_for(sub, Rendered(change, TOKENS))
    finally:
        await client.outbox.close()


@pytest.mark.parametrize(
    ("principal", "change", "op"),
    [
        (OWNER, _change("insert", None, _doc()), "create"),
        (STRANGER, _change("insert", None, _doc()), None),
        (ADMIN, _change("insert", None, _doc()), "create"),
        (OWNER, _change("update", _doc(), _doc(n=2)), "update"),
        (STRANGER, _change("update", _doc(), _doc(n=2)), None),
        (STRANGER, _change("update", _doc(), _doc(["*"])), "enter"),
        (STRANGER, _change("update", _doc(["*"]), _doc()), "leave"),
        (STRANGER, _change("update", _doc(["*"]), _doc(["*"], n=1)), "update"),
        (OWNER, _change("delete", _doc(), None), "delete"),
        (STRANGER, _change("delete", _doc(), None), None),
        (STRANGER, _change("delete", _doc(["*"]), None), "delete"),
        # No pre-image: nobody's access can be checked, so only admins hear of it.
        (OWNER, _change("delete", None, None), None),
        (ADMIN, _change("delete", None, None), "delete"),
        # An update whose post-image is unknown tells nobody anything.
        (ADMIN, _change("update", None, None), None),
    ],
)
async def test_event_for_each_op_and_principal(principal, change, op):
    event = await _event(principal, change)
    if op is None:
        assert event is None
        return
    assert event is not None and event["op"] == op
    if op in ("create", "update", "enter"):
        assert "_readers" not in event["entity"]
        assert event["entity"]["_id"] == "65f0aaaaaaaaaaaaaaaaaaaa"
    else:
        assert "entity" not in event


async def test_only_projects_nested_fields_and_lists():
    change = _change("insert", None, _doc(a={"b": 1, "c": 2}, items=[{"x": 1, "y": 2}, 3], z=0))
    event = await _event(OWNER, change, only=Only(("a.b", "items.x", "missing")))
    assert event is not None
    assert event["entity"] == {
        "_id": "65f0aaaaaaaaaaaaaaaaaaaa",
        "a": {"b": 1},
        "items": [{"x": 1}],
    }


def test_project_keeps_id_only_when_nothing_matches():
    assert project({"_id": "x", "a": 1}, ("b",)) == {"_id": "x"}


async def test_only_exclusions_leave_fields_out_without_touching_the_change():
    after = _doc(a={"b": 1, "c": 2}, items=[{"x": 1, "y": 2}, 3], z=0)
    change = _change("insert", None, after)
    event = await _event(OWNER, change, only=Only(("a.b", "items.x", "z"), exclude=True))
    assert event is not None
    entity = event["entity"]
    assert entity["a"] == {"c": 2} and entity["items"] == [{"y": 2}, 3] and "z" not in entity
    assert after["a"] == {"b": 1, "c": 2} and after["items"][0] == {"x": 1, "y": 2}
    assert exclude({"_id": 1, "a": 1}, ("missing.path",)) == {"_id": 1, "a": 1}


def test_apply_update_sets_removes_and_truncates():
    before = {"_id": 1, "a": {"b": 1}, "list": [1, 2, 3, 4], "gone": True, "arr": [{"k": 1}]}
    after = apply_update(
        before,
        {
            "updatedFields": {"a.c": 2, "new": {"x": 1}, "arr.0.k": 5, "list.1": 20},
            "removedFields": ["gone"],
            "truncatedArrays": [{"field": "list", "newSize": 2}],
        },
    )
    assert after == {
        "_id": 1,
        "a": {"b": 1, "c": 2},
        "list": [1, 20],
        "arr": [{"k": 5}],
        "new": {"x": 1},
    }
    assert before["list"] == [1, 2, 3, 4] and before["gone"] is True  # untouched


def test_resume_tokens_round_trip_and_refuse_garbage_and_tokens_not_issued():
    position = Position(Timestamp(1795629786, 19), "42000000abcdef")
    token = TOKENS.make(position)
    assert TOKENS.read(token) == position
    assert ResumeTokens("a test secret").read(token) == position  # every instance reads it
    body, _, mac = token.rpartition(".")
    later = Position(Timestamp(1895629786, 19), "42000000abcdef")
    forged = [
        f"{body}.{'0' * len(mac)}",
        f"{TOKENS.make(later).rpartition('.')[0]}.{mac}",  # another position, same seal
        f"{body}0.{mac}",
        ResumeTokens("another deployment").make(position),
    ]
    for bad in ("", "garbage", "1.2", "x.y.00", 12, None, "1.2.zz", f"{token}.", *forged):
        with pytest.raises(Invalid):
            TOKENS.read(bad)
    # The shape handed out before tokens were sealed: expired, so its client reloads.
    for old in (body, "1.2.00"):
        with pytest.raises(ResumeExpired):
            TOKENS.read(old)


async def test_detach_forgets_the_clients_subscriptions_entirely():
    from app.realtime.hub import Hub

    hub = Hub()
    peer = _Peer(OWNER)
    hub.attach(peer)
    client = hub.clients[id(peer)]
    for n in range(3):
        hub._add(Subscription(f"s{n}", client, f"store{n % 2}", None, None))
    assert set(hub.by_store) == {"store0", "store1"}
    await hub.detach(peer)
    assert hub.by_store == {} and hub.clients == {}


class _Recording(_Peer):
    def __init__(self, principal: Principal):
        super().__init__(principal)
        self.got: list[str] = []

    def emit_now(self, event: str, data: str) -> bool:
        self.got.append(data)
        return True


async def test_a_fan_out_under_way_skips_what_was_unsubscribed_meanwhile():
    import asyncio

    from app.realtime.hub import FANOUT_SLICE, Hub

    hub = Hub()
    hub.services = SimpleNamespace(tokens=TOKENS)  # type: ignore[assignment]
    peers = [_Recording(OWNER) for _ in range(2 * FANOUT_SLICE + 1)]
    subs = []
    for n, peer in enumerate(peers):
        hub.attach(peer)
        sub = Subscription(f"s{n}", hub.clients[id(peer)], "orders", None, None, acked=True)
        hub._add(sub)
        subs.append(sub)
    hub.publish(_change("insert", None, _doc(["*"])))  # routed now, written by a task
    gone = subs[-1]  # the fan-out reaches it after yielding twice
    hub._unsubscribe(gone.client, {"subscription": gone.id})
    await hub.detach(peers[0])
    for _ in range(10):
        await asyncio.sleep(0)
    assert [len(p.got) for p in peers if p not in (peers[0], gone.client.peer)] == [1] * (
        len(peers) - 2
    )
    assert peers[0].got == [] and gone.client.peer.got == []
    for peer in peers[1:]:
        await hub.detach(peer)


async def test_clients_alike_share_one_reader_and_its_op():
    from app.realtime.hub import Hub

    hub = Hub()
    peers = [_Recording(p) for p in (OWNER, Principal("owner1", "owner", groups=("team",)),
                                     STRANGER, ADMIN)]  # fmt: skip
    for peer in peers:
        hub.attach(peer)
    owner, same, stranger, admin = (hub.clients[id(p)] for p in peers)
    assert owner.reader is same.reader
    assert owner.reader is not stranger.reader and owner.reader is not admin.reader
    rendered = Rendered(_change("insert", None, _doc()), TOKENS)
    ops = [event_for(Subscription("s", c, "orders", None, None), rendered)
           for c in (owner, same, stranger, admin)]  # fmt: skip
    assert [e["op"] if e else None for e in ops] == ["create", "create", None, "create"]
    assert len(rendered.ops) == 3  # owner and its twin share one
    for peer in peers:
        await hub.detach(peer)


FENCE = ObjectId()


class _EndlessStream:
    """A change stream that never runs dry, as under steady writes: every read returns the
    next insert, one cluster second later, but for an empty read now and then (as a database
    answers for a stretch of other collections' changes) and the marker at ``fence_at``.
    ``meanwhile`` runs once a given second is read, as the live source would."""

    def __init__(self, start: int, fence_at: int, meanwhile: dict[int, Any]):
        self.next_time = start
        self.fence_at = fence_at
        self.meanwhile = meanwhile
        self.reads = 0

    async def try_next(self) -> dict[str, Any] | None:
        import asyncio

        await asyncio.sleep(0)  # like a real read, it lets the loop run (and time out)
        self.reads += 1
        if self.reads % 4 == 0:
            return None
        self.next_time += 1
        if self.next_time in self.meanwhile:
            self.meanwhile.pop(self.next_time)()
        if self.next_time == self.fence_at:
            return _fence_event(self.next_time)
        return _insert_event(self.next_time)


def _insert_event(seconds: int) -> dict[str, Any]:
    doc = _doc(access=["*"], n=seconds)
    doc["_id"] = ObjectId()
    return {
        "operationType": "insert",
        "ns": {"db": "x", "coll": "orders"},
        "documentKey": {"_id": doc["_id"]},
        "fullDocument": doc,
        "clusterTime": Timestamp(seconds, 1),
        "wallTime": None,
        "_id": {"_data": f"{seconds:08x}"},
    }


def _fence_event(seconds: int) -> dict[str, Any]:
    return {
        "operationType": "insert",
        "ns": {"db": "x", "coll": "_fences"},
        "documentKey": {"_id": FENCE},
        "fullDocument": {"_id": FENCE},
        "clusterTime": Timestamp(seconds, 1),
        "wallTime": None,
        "_id": {"_data": f"{seconds:08x}"},
    }


def _change_at(seconds: int) -> Change:
    change = Change.from_event(_insert_event(seconds))
    assert change is not None
    return change


_REPLAYED = list(range(1_000_001, 1_000_030))


@pytest.mark.parametrize(
    ("held", "later", "odd", "expected"),
    [
        # The live source hands over, while the replay reads, a change the replay reads too
        # (before the marker) and one after the marker: each arrives once, in order.
        ([1_000_025, 1_000_031], [1_000_032], (), [*_REPLAYED, 1_000_031, 1_000_032]),
        # A live source that lags behind the replay hands over nothing twice.
        ([1_000_025], [1_000_029, 1_000_033], (), [*_REPLAYED, 1_000_033]),
        # A change that cannot be rendered (an odd document another program stored) is left
        # out, replayed, held or live, and the events after it still come.
        (
            [1_000_025, 1_000_031],
            [1_000_032, 1_000_033],
            (1_000_005, 1_000_031, 1_000_032),
            [n for n in _REPLAYED if n != 1_000_005] + [1_000_033],
        ),
    ],
)
async def test_a_replay_ends_at_its_marker_through_empty_reads_and_steady_writes(
    monkeypatch, held, later, odd, expected
):
    import asyncio
    import contextlib
    from types import SimpleNamespace

    from app.realtime import hub as hub_module

    hub = hub_module.Hub()
    meanwhile: dict[int, Any] = {
        1_000_010 + n: functools.partial(hub.publish, _change_at(at)) for n, at in enumerate(held)
    }

    @contextlib.asynccontextmanager
    async def endless(storage, pipeline, resume_after=None, max_await_ms=None):
        assert pipeline == hub_module.replay_pipeline("orders", FENCE)
        yield _EndlessStream(int(resume_after["_data"], 16), 1_000_030, meanwhile)

    async def fence() -> ObjectId:
        return FENCE

    real_encode = hub_module.encode

    def picky_encode(rendered: Rendered, *rest: Any) -> str:
        if rendered.change.after is not None and rendered.change.after["n"] in odd:
            raise ValueError("a value no event can carry")
        return real_encode(rendered, *rest)

    monkeypatch.setattr(hub_module, "change_stream", endless)
    monkeypatch.setattr(hub_module, "encode", picky_encode)
    hub.services = SimpleNamespace(  # type: ignore[assignment]
        storage=SimpleNamespace(request_timeout=lambda wanted: wanted, fence=fence),
        settings=SimpleNamespace(db_timeout_ms=10_000),
        tokens=TOKENS,
    )
    hub.source = SimpleNamespace(refresh=lambda: None)  # type: ignore[assignment]
    peer = _RecordingPeer(OWNER)
    hub.attach(peer)  # type: ignore[arg-type]
    client = hub.clients[id(peer)]
    assert client.peer is peer

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)  # the ack's and the fan-out's turns

    def sent() -> list[int]:
        return [orjson_loads(p)["entity"]["n"] for p in peer.sent]

    try:
        resume = Position(Timestamp(1_000_000, 1), f"{1_000_000:08x}")
        ack = await asyncio.wait_for(
            hub.handle(peer, "subscribe", {"store": "orders", "resume": TOKENS.make(resume)}),  # type: ignore[arg-type]
            2.0,
        )
        assert ack["success"] is True
        sub = client.subscriptions[ack["subscription"]]
        await settle()
        assert sub.live and sub.acked and not sub.held and not meanwhile
        for at in later:  # live changes, through the source as usual
            hub.publish(_change_at(at))
        await settle()
        assert sent() == expected  # up to the marker (not beyond), then what is newer, once
    finally:
        await hub.detach(peer)  # type: ignore[arg-type]


class _RecordingPeer(_Peer):
    def __init__(self, principal: Principal):
        super().__init__(principal)
        self.sent: list[str] = []

    async def emit_encoded(self, event: str, data: str) -> None:
        self.sent.append(data)


def orjson_loads(payload: str) -> dict[str, Any]:
    import orjson

    return dict(orjson.loads(payload))


async def test_resumes_replay_a_bounded_number_at_once_and_the_rest_are_refused_fast(
    monkeypatch,
):
    """Each replay reads a stream of its own: past ``REPLAY_LIMIT`` running and as many
    waiting, a resume is answered ``UNAVAILABLE`` at once; a waiting one, after
    ``REPLAY_WAIT_S``. Slots come back when replays end, refused or not."""
    import asyncio
    import contextlib
    from types import SimpleNamespace

    from app.realtime import hub as hub_module

    monkeypatch.setattr(hub_module, "REPLAY_LIMIT", 2)
    monkeypatch.setattr(hub_module, "REPLAY_WAIT_S", 0.2)
    gate = asyncio.Event()

    class _Gated:
        async def try_next(self) -> dict[str, Any]:
            await gate.wait()  # a replay that takes a while
            return _fence_event(1_000_001)

    @contextlib.asynccontextmanager
    async def gated(storage, pipeline, resume_after=None, max_await_ms=None):
        yield _Gated()

    async def fence() -> ObjectId:
        return FENCE

    monkeypatch.setattr(hub_module, "change_stream", gated)
    hub = hub_module.Hub()
    hub.services = SimpleNamespace(  # type: ignore[assignment]
        storage=SimpleNamespace(request_timeout=lambda wanted: wanted, fence=fence),
        settings=SimpleNamespace(db_timeout_ms=10_000),
        tokens=TOKENS,
    )
    hub.source = SimpleNamespace(refresh=lambda: None)  # type: ignore[assignment]
    peers = [_RecordingPeer(OWNER) for _ in range(6)]
    for peer in peers:
        hub.attach(peer)  # type: ignore[arg-type]
    resume = {"store": "orders", "resume": TOKENS.make(Position(Timestamp(1_000_000, 1), "00"))}

    def subscribe(peer: _RecordingPeer) -> asyncio.Task[dict[str, Any]]:
        return asyncio.create_task(hub.handle(peer, "subscribe", resume))  # type: ignore[arg-type]

    try:
        tasks = []
        for peer in peers[:5]:
            tasks.append(subscribe(peer))
            await asyncio.sleep(0)  # in this order: two run, two wait, one is refused
        await asyncio.sleep(0.05)
        refused_at_once = tasks[4]
        assert refused_at_once.done() and refused_at_once.result()["error"] == "UNAVAILABLE"
        await asyncio.sleep(0.3)  # the two waiting give up
        for waited in tasks[2:4]:
            assert waited.done() and waited.result()["code"] == "503"
        assert not any(task.done() for task in tasks[:2])
        gate.set()
        for ran in tasks[:2]:
            assert (await asyncio.wait_for(ran, 2))["success"] is True
        assert hub.replays.running == 0 and hub.replays.waiting == 0
        assert (await asyncio.wait_for(subscribe(peers[5]), 2))["success"] is True
    finally:
        for peer in peers:
            await hub.detach(peer)  # type: ignore[arg-type]
