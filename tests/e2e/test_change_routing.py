"""Who reads which changes: a process's realtime stream follows only the stores its sockets
watch (growing without a gap), and one process per deployment records history, a successor
resuming where it stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId
from pymongo import monitoring

from app import history as history_module
from app.history import History
from app.realtime import changes as changes_module
from app.realtime.changes import Change, ChangeSource, Position, ResumeTokens
from app.storage import HISTORY, Storage, change_stream
from tests.e2e.sockets import listening, token_of
from tests.e2e.support import raw_database
from tests.helpers import unique

pytestmark = pytest.mark.asyncio


async def eventually(check: Callable[[], Any], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_filtered_source_hands_over_only_its_stores_and_grows_without_a_gap(settings, app):
    storage = app.state.services.storage
    a, b = unique("watched"), unique("unwatched")
    watched = {a}
    got: list[Change] = []
    source = ChangeSource(storage, got.append, stores=lambda: watched)
    source.start()
    try:
        await asyncio.wait_for(source.ready.wait(), 10)
        async with raw_database(settings.mongodb_url) as db:
            first = (await db[a].insert_one({"n": 1})).inserted_id
            await db[b].insert_one({"n": 1})
            await eventually(lambda: any(c.id == first for c in got))
            await asyncio.sleep(0.7)  # more than one getMore wait: b's change had its chance
            assert [c.store for c in got] == [a]

            watched.add(b)
            source.refresh()
            # Written while the stream is being reopened: each must arrive exactly once.
            later = [(await db[b].insert_one({"n": 2})).inserted_id]
            later.append((await db[a].insert_one({"n": 2})).inserted_id)
            await eventually(lambda: all(any(c.id == i for c in got) for i in later))
            await asyncio.sleep(0.7)
            ids = [c.id for c in got]
            assert ids.count(first) == 1 and all(ids.count(i) == 1 for i in later)
            assert ids.index(later[0]) < ids.index(later[1])  # commit order
    finally:
        await source.stop()


async def test_a_resume_into_a_store_the_process_did_not_follow_misses_nothing(
    settings, live, make_user, store
):
    user = await make_user()
    async with raw_database(settings.mongodb_url) as db:
        # What a client kept from an earlier session: the resume token of a change of
        # ``store``, a store no socket of this server process has followed since.
        async with await db.watch([{"$match": {"ns.coll": store}}]) as stream:
            await user.post(f"/api/v1/{store}", json={"n": 0})
            event = await asyncio.wait_for(stream.next(), 10)
        position = Position(event["clusterTime"], event["_id"]["_data"])
        token = ResumeTokens(settings.signing_secret()).make(position)
    missed = [(await user.post(f"/api/v1/{store}", json={"n": n})).json() for n in (1, 2, 3)]

    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        ack = await socket.subscribe(store=store, resume=token)
        assert ack["success"] is True
        replayed = [await socket.next() for _ in missed]
        assert [(e["op"], e["entity"]) for e in replayed] == [("create", m) for m in missed]
        live_one = (await user.post(f"/api/v1/{store}", json={"n": 4})).json()
        assert (await socket.next())["entity"] == live_one
        await socket.nothing()


async def token_of_a_change(url: str, user: Any, store: str) -> str:
    """The resume token a client keeps: of one change it received, before it disconnects."""
    async with listening(url, auth={"token": token_of(user)}) as socket:
        await socket.subscribe(store=store)
        await user.post(f"/api/v1/{store}", json={"n": 0})
        return str((await socket.next())["resume"])


async def test_a_resume_into_a_store_the_stream_stopped_following_misses_nothing(
    live, make_user, store
):
    """The store's last subscriber leaves; a subscription to another store reopens the stream
    without it; a change is then made that this process reads from nobody. A client resuming
    from before both changes gets both, once, in order (the defect: the process took the
    store for still followed and ended the replay at the last change it had seen itself)."""
    user = await make_user()
    token = token_of(user)
    resume = await token_of_a_change(live.url, user, store)
    await asyncio.sleep(0.3)  # the server has seen the socket leave
    # The stream still follows the store (it narrows only when it is next reopened).
    first = (await user.post(f"/api/v1/{store}", json={"n": 1})).json()
    await asyncio.sleep(0.7)
    async with listening(live.url, auth={"token": token}) as socket:
        await socket.subscribe(store=f"{store}other")  # reopens the stream without the store
        await asyncio.sleep(0.7)
        second = (await user.post(f"/api/v1/{store}", json={"n": 2})).json()
        await asyncio.sleep(1.2)  # the stream reads past it (more than one getMore wait)
        ack = await socket.subscribe(store=store, resume=resume)
        assert ack["success"] is True, ack
        got = [(await socket.next())["entity"] for _ in range(2)]
        assert got == [first, second]
        await socket.nothing()


async def test_a_resume_reads_past_long_stretches_of_other_changes(
    settings, live, make_user, store
):
    """Between the client's token and its store's next change lie more changes of other
    collections than one database read scans: the replay must not take the empty reads that
    brings for the end of the history."""
    user = await make_user()
    token = token_of(user)
    resume = await token_of_a_change(live.url, user, store)
    async with raw_database(settings.mongodb_url) as db:
        await db[f"{store}noise"].insert_many([{"i": i} for i in range(1500)])
    missed = (await user.post(f"/api/v1/{store}", json={"n": 1})).json()
    await asyncio.sleep(1.0)
    async with listening(live.url, auth={"token": token}) as socket:
        ack = await socket.subscribe(store=store, resume=resume)
        assert ack["success"] is True, ack
        assert (await socket.next())["entity"] == missed
        live_one = (await user.post(f"/api/v1/{store}", json={"n": 2})).json()
        assert (await socket.next())["entity"] == live_one
        await socket.nothing()


async def test_one_recorder_at_a_time_and_a_successor_resumes_where_it_stopped(
    settings, monkeypatch
):
    monkeypatch.setattr(history_module, "RENEW_S", 0.2)
    monkeypatch.setattr(history_module, "LEASE_S", 1.0)
    storage = Storage(settings.mongodb_url, unique("leases"))
    entries = storage.system(HISTORY)
    recorders: list[History] = []

    async def recorder() -> History:
        made = History(storage)
        recorders.append(made)
        await made.start()
        return made

    async def recorded(entity: ObjectId) -> None:
        await eventually_async(lambda: entries.count_documents({"entity": entity}))

    async def eventually_async(count: Callable[[], Any]) -> None:
        deadline = time.monotonic() + 10
        while await count() < 1:
            assert time.monotonic() < deadline, "not recorded in time"
            await asyncio.sleep(0.05)

    try:
        async with raw_database(settings.mongodb_url, storage.db.name) as db:
            first, second = await recorder(), await recorder()
            assert first.recording.is_set() and not second.recording.is_set()
            one = (await db.notes.insert_one({"n": 1})).inserted_id
            await recorded(one)

            await first.stop()  # hands the lease back, with the token it had written up to
            two = (await db.notes.insert_one({"n": 2})).inserted_id
            await eventually(second.recording.is_set)
            await recorded(two)

            await second.stop()
            three = (await db.notes.insert_one({"n": 3})).inserted_id  # no recorder runs
            await asyncio.sleep(0.3)
            third = await recorder()
            assert third.recording.is_set()
            await recorded(three)
            await asyncio.sleep(0.5)
            for entity in (one, two, three):  # each recorded once, whoever read it
                assert await entries.count_documents({"entity": entity}) == 1
            by = await entries.find_one({"entity": three})
            assert by is not None and by["op"] == "create" and by["by"] is None
    finally:
        for made in recorders:
            await made.stop()
        await storage.client.drop_database(storage.db.name)
        await storage.close()


async def test_a_recorder_stopped_before_it_wrote_anything_still_leaves_a_start_to_resume(
    settings, monkeypatch
):
    """The lease carries a token from the moment a recorder's stream opens: a recorder that
    stops (or dies) before its first entry is written, or before it noted that write, must
    not leave its successor to start from "now", past the changes made in between."""
    monkeypatch.setattr(history_module, "RENEW_S", 0.2)
    monkeypatch.setattr(history_module, "LEASE_S", 1.0)
    storage = Storage(settings.mongodb_url, unique("leases"))
    entries = storage.system(HISTORY)
    first, second = History(storage), History(storage)
    try:
        async with raw_database(settings.mongodb_url, storage.db.name) as db:
            await first.start()
            assert first.recording.is_set()
            await first.stop()
            made = (await db.notes.insert_one({"n": 1})).inserted_id  # while none records
            await second.start()
            assert second.recording.is_set()
            deadline = time.monotonic() + 10
            while not await entries.count_documents({"entity": made}):
                assert time.monotonic() < deadline, "the change made between them was lost"
                await asyncio.sleep(0.05)
    finally:
        for made_recorder in (first, second):
            await made_recorder.stop()
        await storage.client.drop_database(storage.db.name)
        await storage.close()


async def test_a_source_that_follows_no_store_barely_reads_while_others_write(
    settings, app, monkeypatch
):
    """An instance whose sockets watch nothing pays nothing for writes elsewhere, even on a
    database (like the embedded one) that answers a waiting read early at every write."""
    from contextlib import asynccontextmanager

    from app.realtime import changes

    reads = 0
    opened = changes.change_stream

    @asynccontextmanager
    async def counted(*args: Any, **kwargs: Any):
        async with opened(*args, **kwargs) as stream:
            original = stream.try_next

            async def try_next() -> Any:
                nonlocal reads
                reads += 1
                return await original()

            stream.try_next = try_next
            yield stream

    monkeypatch.setattr(changes, "change_stream", counted)
    source = ChangeSource(app.state.services.storage, lambda change: None, stores=lambda: ())
    source.start()
    try:
        await asyncio.wait_for(source.ready.wait(), 10)
        async with raw_database(settings.mongodb_url) as db:
            busy = unique("busy")
            started, reads = time.monotonic(), 0
            for n in range(200):
                await db[busy].insert_one({"n": n})
            seconds = time.monotonic() - started
        # One read per pause at most, however many writes there were.
        assert reads <= seconds / changes.IDLE_PAUSE_S + 2, (reads, seconds)
    finally:
        await source.stop()


class GetMores(monitoring.CommandListener):
    """Counts the getMore commands sent to one database."""

    def __init__(self, db_name: str):
        self.db_name = db_name
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "getMore" and event.database_name == self.db_name:
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_paced_source_reads_what_came_meanwhile_in_one_go(mongodb_url):
    """The history recorder's stream waits after each read: one database read for many
    changes, not one per change, and still every change, once, in order."""
    db_name = unique("paced")
    listener = GetMores(db_name)
    monitoring.register(listener)  # for clients made from now on: the one below
    storage = Storage(mongodb_url, db_name)
    got: list[Change] = []
    source = ChangeSource(storage, got.append, pace_s=history_module.PACE_S)
    source.start()
    try:
        await asyncio.wait_for(source.ready.wait(), 10)
        async with raw_database(mongodb_url, db_name) as raw:
            started, listener.count = time.monotonic(), 0
            things = raw["things"]
            ids = [(await things.insert_one({"n": n})).inserted_id for n in range(200)]
            seconds = time.monotonic() - started
            await eventually(lambda: len(got) >= 200)
        assert [c.id for c in got] == ids
        # One read per pause (and the one that waits for the next change), not one per change.
        most = 2 * seconds / history_module.PACE_S + 5
        assert listener.count <= most, (listener.count, seconds)
        assert listener.count < 100, listener.count
    finally:
        await source.stop()
        listener.db_name = ""  # registered for good: let it count nothing from now on
        await storage.close()


async def test_writes_a_stream_filters_out_cost_it_a_bounded_number_of_reads(mongodb_url):
    """The embedded database answers every waiting stream early at every write, whether the
    stream's filter keeps it or not. A source that asked again at once made one read per
    write to a store it does not follow (or to the history, the audit log...); now it waits
    EMPTY_PAUSE_S after an empty answer, and what it follows still arrives."""
    db_name = unique("filtered")
    listener = GetMores(db_name)
    monitoring.register(listener)  # for clients made from now on: the one below
    storage = Storage(mongodb_url, db_name)
    got: list[Change] = []
    source = ChangeSource(storage, got.append, stores=lambda: {"watched"})
    source.start()
    try:
        await asyncio.wait_for(source.ready.wait(), 10)
        async with raw_database(mongodb_url, db_name) as raw:
            await asyncio.sleep(0.2)
            started, listener.count = time.monotonic(), 0
            elsewhere = raw["elsewhere"]
            for first in range(0, 300, 50):  # 300 writes, 50 at a time: quick on any machine
                await asyncio.gather(
                    *(elsewhere.insert_one({"n": n}) for n in range(first, first + 50))
                )
            seconds = time.monotonic() - started
            reads = listener.count
            made = await raw["watched"].insert_one({"n": "kept"})
            await eventually(lambda: len(got) == 1)
        assert got[0].id == made.inserted_id
        most = seconds / changes_module.EMPTY_PAUSE_S + 5
        # Asking again at once: 290 reads for these writes made one at a time, 117-118 for
        # them made 50 at a time (against a bound of about 50 in the same runs).
        assert reads <= most, (reads, seconds)
    finally:
        await source.stop()
        listener.db_name = ""
        await storage.close()


async def test_a_paced_source_keeps_up_with_a_backlog(mongodb_url):
    """Pacing spares reads when changes are few; it must not cap how many a second a source
    follows. A backlog of 2,000 changes with a 2 s pace: read on at once after each busy read
    (paused after every read, as before, it took 20 reads and as many pauses: 40 s)."""
    db_name = unique("backlog")
    storage = Storage(mongodb_url, db_name)
    got: list[Change] = []
    source = ChangeSource(storage, got.append, pace_s=2.0)
    source.start()
    try:
        await asyncio.wait_for(source.ready.wait(), 10)
        async with raw_database(mongodb_url, db_name) as raw:
            for first in range(0, 2000, 500):
                await raw["things"].insert_many([{"n": n} for n in range(first, first + 500)])
            started = time.monotonic()
            await eventually(lambda: len(got) >= 2000, seconds=30)
            took = time.monotonic() - started
        assert [c.after["n"] for c in got if c.after] == list(range(2000))
        # Ten or more busy reads, then a quiet one: at most a pause or two, not one per read.
        assert took < 8, took
    finally:
        await source.stop()
        await storage.close()


async def test_a_new_subscriber_hears_only_of_what_follows_its_subscription(live, make_user):
    """The stream reopened for a store no socket followed starts from a token that may lie
    before the subscription; what was written before it must not reach the subscriber."""
    user = await make_user()
    async with listening(live.url, auth={"token": token_of(user)}) as socket:
        for _ in range(3):
            store = unique("fresh")
            await user.post(f"/api/v1/{store}", json={"n": "before"})  # just before
            assert (await socket.subscribe(store=store))["success"] is True
            after = (await user.post(f"/api/v1/{store}", json={"n": "after"})).json()
            event = await socket.next()
            assert (event["op"], event["entity"]) == ("create", after)
        await socket.nothing()


async def test_the_stream_a_subscribe_reopens_outlives_that_requests_deadline(
    mongodb_url, tmp_path, make_user
):
    """The reopening is asked for inside a subscribe, which runs under the request deadline
    (DB_TIMEOUT_MS); the reopened stream must not inherit it and die when it passes."""
    from tests.e2e.conftest import make_settings
    from tests.e2e.live import live_server

    user = await make_user()
    settings = make_settings(mongodb_url, tmp_path, DB_TIMEOUT_MS="500")
    async with (
        live_server(settings) as server,
        listening(server.url, auth={"token": token_of(user)}) as socket,
    ):
        store = unique("outlives")
        assert (await socket.subscribe(store=store))["success"] is True
        await asyncio.sleep(1.5)  # three deadlines later
        for n in range(2):
            made = (await user.post(f"/api/v1/{store}", json={"n": n})).json()
            assert (await socket.next())["entity"] == made


async def _next_update(stream: Any) -> dict[str, Any]:
    for _ in range(100):
        event = await stream.try_next()
        if event is not None and event["operationType"] == "update":
            found: dict[str, Any] = event
            return found
    raise AssertionError("no update event")


async def test_an_update_comes_from_its_pre_image_without_a_lookup_by_the_database(mongodb_url):
    """A store the API prepared keeps pre-images: an update event carries the entity as it
    was and what changed, the database looks nothing up for it (no ``fullDocument``), and the
    change's document after it is exact."""
    db_name, store = unique("images"), unique("kept")
    storage = Storage(mongodb_url, db_name)
    try:
        await storage.prepare_store(store)
        collection = storage.store(store)
        entity_id = (await collection.insert_one({"n": 1, "tags": ["a"]})).inserted_id
        async with change_stream(storage, [{"$match": {"ns.coll": store}}], max_await_ms=50) as s:
            await collection.update_one({"_id": entity_id}, {"$set": {"n": 2, "tags.1": "b"}})
            await collection.update_one({"_id": entity_id}, {"$set": {"n": 3}})
            event = await _next_update(s)
        assert event["fullDocumentBeforeChange"]["n"] == 1
        assert "fullDocument" not in event
        change = Change.from_event(event)
        assert change is not None and change.after == {"_id": entity_id, "n": 2, "tags": ["a", "b"]}
    finally:
        await storage.close()


async def test_an_update_without_a_pre_image_carries_the_document_as_it_is_now(mongodb_url):
    """A collection written outside the API keeps no pre-images until the server prepares
    it: for its updates the stream looks the document up itself, as the database's
    ``updateLookup`` would, so readers still see the entity after the change."""
    db_name, store = unique("noimages"), unique("raw")
    storage = Storage(mongodb_url, db_name)
    try:
        async with raw_database(mongodb_url, db_name) as raw:
            entity_id = (await raw[store].insert_one({"n": 1})).inserted_id
            async with change_stream(
                storage, [{"$match": {"ns.coll": store}}], max_await_ms=50
            ) as stream:
                await raw[store].update_one({"_id": entity_id}, {"$set": {"n": 2}})
                event = await _next_update(stream)
                token = stream.resume_token
            assert event.get("fullDocumentBeforeChange") is None
            assert event["fullDocument"] == {"_id": entity_id, "n": 2}
            change = Change.from_event(event)
            assert change is not None and change.after == {"_id": entity_id, "n": 2}
            # Deleted before the stream reads the update: nothing to look up, as with
            # updateLookup.
            await raw[store].update_one({"_id": entity_id}, {"$set": {"n": 3}})
            await raw[store].delete_one({"_id": entity_id})
            async with change_stream(
                storage, [{"$match": {"ns.coll": store}}], token, max_await_ms=50
            ) as stream:
                event = await _next_update(stream)
            assert event["fullDocument"] is None
            assert event["updateDescription"]["updatedFields"] == {"n": 3}
    finally:
        await storage.close()


async def test_a_change_read_after_its_store_was_dropped_does_not_bring_the_store_back(
    mongodb_url,
):
    """The history recorder reads a little behind: a change of a store dropped since then
    prepares nothing, and a store dropped between its preparation and the background index
    build is not made again by the build."""
    db_name, gone, dropped_later = unique("dropped"), unique("gone"), unique("later")
    storage = Storage(mongodb_url, db_name)
    try:
        await storage.prepare_existing(gone)
        assert not await storage.store_exists(gone)
        assert not storage.is_prepared(gone)

        async with raw_database(mongodb_url, db_name) as raw:
            await raw[dropped_later].insert_one({"n": 1})
            await storage.prepare_existing(dropped_later)
            assert storage.is_prepared(dropped_later)
            options = await raw.command("listCollections", filter={"name": dropped_later})
            kept = options["cursor"]["firstBatch"][0]["options"]
            assert kept.get("changeStreamPreAndPostImages") == {"enabled": True}
            await raw[dropped_later].drop()
            await asyncio.wait_for(asyncio.gather(*storage._index_builds), 10)
            assert not await storage.store_exists(dropped_later)
            assert not storage.is_prepared(dropped_later)
    finally:
        await storage.close()
