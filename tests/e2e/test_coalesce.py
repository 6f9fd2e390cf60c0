"""Concurrent POSTs share database inserts, and concurrent reads by id share queries
(``app.coalesce``), and each still gets the answer it would have had alone: its own entity,
its own refusal, the batch's failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from bson import ObjectId
from pymongo.errors import PyMongoError

from app.errors import DeadlineExceeded
from app.storage import Storage, translated_async
from tests.helpers import assert_api_error, unique

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def storage(mongodb_url: str) -> AsyncIterator[Storage]:
    made = Storage(mongodb_url, unique("inserts"))
    yield made
    await made.client.drop_database(made.db.name)
    await made.close()


async def test_concurrent_posts_share_inserts_and_each_gets_its_entity(app, admin, store):
    counts = app.state.services.storage.inserts
    batches, documents = counts.batches, counts.items
    # Fewer than the write lane's 32 slots: none waits for one (under a busy suite, 100 ms).
    bodies = [{"n": n, "name": f"entity {n}"} for n in range(30)]
    answers = await asyncio.gather(*(admin.post(f"/api/v1/{store}", json=b) for b in bodies))
    assert [a.status_code for a in answers] == [201] * 30, [a.text for a in answers]
    assert counts.items - documents == 30
    # The first went alone; some that came meanwhile went together (how many depends on
    # how fast the database answers: on a busy machine, a batch may carry two).
    assert counts.batches - batches < 30, counts.batches - batches
    ids = {a.json()["_id"] for a in answers}
    assert len(ids) == 30
    for body, answer in zip(bodies, answers, strict=True):
        made = answer.json()
        assert made["n"] == body["n"] and made["owner"] == admin.id
        assert answer.headers["location"].endswith(f"/{made['_id']}")
        stored = await admin.get(f"/api/v1/{store}/{made['_id']}")
        assert stored.json() == made
    meta = await admin.get(f"/api/v1/{store}?meta=true")
    assert meta.json()["count"] == 30


async def test_a_refusal_in_a_shared_insert_is_that_post_s_alone(app, admin, store):
    definition = {
        "schema": {"type": "object", "properties": {"email": {"type": "string"}}},
        "unique": ["email"],
    }
    assert (await admin.put(f"/api/v1/_stores/{store}", json=definition)).status_code == 200
    counts = app.state.services.storage.inserts
    batches = counts.batches
    bodies = [{"email": "same@example.com"} for _ in range(6)]
    bodies += [{"email": f"own{n}@example.com"} for n in range(6)]
    answers = await asyncio.gather(*(admin.post(f"/api/v1/{store}", json=b) for b in bodies))
    assert counts.batches - batches < len(bodies)
    same = [a for a, b in zip(answers, bodies, strict=True) if b["email"] == "same@example.com"]
    assert sorted(a.status_code for a in same) == [201] + [409] * 5
    for refused in (a for a in same if a.status_code == 409):
        body = assert_api_error(refused, 409, "CONFLICT")
        assert body["message"].startswith("email:")
    assert [a.status_code for a in answers[6:]] == [201] * 6
    assert (await admin.get(f"/api/v1/{store}?meta=true")).json()["count"] == 7


async def test_an_insert_given_up_before_its_batch_leaves_it_out(storage):
    first, given_up, last = ({"_id": ObjectId(), "n": n} for n in range(3))
    sending = asyncio.create_task(storage.insert("things", first))
    for _ in range(3):  # the first is taken into a batch of its own, which is on its way
        await asyncio.sleep(0)
    assert storage.inserts.batches == 1
    queued = [asyncio.create_task(storage.insert("things", d)) for d in (given_up, last)]
    await asyncio.sleep(0)
    queued[0].cancel()
    await sending
    await queued[1]
    with pytest.raises(asyncio.CancelledError):
        await queued[0]
    stored = await storage.store("things").find({}, {"n": 1}).sort("n").to_list()
    assert [s["n"] for s in stored] == [0, 2]
    assert (storage.inserts.batches, storage.inserts.items) == (2, 2)


async def test_closing_tells_every_waiting_caller(storage):
    storage.inserts.most = 1  # one per batch, so that some still wait when it closes
    documents = [{"_id": ObjectId(), "n": n} for n in range(4)]
    alone = asyncio.create_task(storage.insert("things", documents[0]))
    for _ in range(3):
        await asyncio.sleep(0)
    behind = [asyncio.create_task(storage.insert("things", d)) for d in documents[1:]]
    await asyncio.sleep(0)
    await alone  # back: the batch of the second is on its way, the others wait
    assert storage.inserts.batches == 2
    await storage.inserts.close()
    outcomes = await asyncio.gather(*behind, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    stored = await storage.store("things").distinct("n")
    assert 0 in stored and 2 not in stored and 3 not in stored
    assert not storage.inserts._queues


async def test_a_batch_past_its_deadline_fails_every_call_in_it(storage):
    storage.batch_timeout_s = 1e-6  # no batch can be answered in that time
    storage.inserts.most = storage.reads.most = 3
    inserts = [storage.insert("things", {"_id": ObjectId()}) for _ in range(5)]
    reads = [storage.entity("things", ObjectId()) for _ in range(4)]
    outcomes = await asyncio.gather(*inserts, *reads, return_exceptions=True)
    # The first of each went alone, in its caller's own time (no deadline here); the others
    # queued behind it and went three at a time (inserts: 1, 3, 1; reads: 1, 3), each batch
    # past its deadline.
    assert outcomes[0] is None and outcomes[5] is None, outcomes
    late = outcomes[1:5] + outcomes[6:]
    assert all(isinstance(o, PyMongoError) and o.timeout for o in late), outcomes
    assert (storage.inserts.batches, storage.reads.batches) == (3, 2)
    assert not storage.inserts._queues and not storage.reads._queues  # nothing left behind
    with pytest.raises(DeadlineExceeded):
        async with translated_async():
            raise late[0]


async def test_concurrent_reads_by_id_share_queries_and_each_gets_its_answer(
    app, admin, make_user, store
):
    reader = await make_user()
    made = []
    for n in range(12):
        access = [reader.id] if n % 2 == 0 else []
        answer = await admin.post(f"/api/v1/{store}", json={"n": n, "access": access})
        made.append(answer.json())
    missing = str(ObjectId())
    # Each id twice, and one that does not exist, by a user who may read half of them.
    urls = [f"/api/v1/{store}/{m['_id']}" for m in made] * 2 + [f"/api/v1/{store}/{missing}"]
    counts = app.state.services.storage.reads
    batches, items = counts.batches, counts.items
    answers = await asyncio.gather(*(reader.get(url) for url in urls))
    assert counts.items - items == len(urls)
    assert counts.batches - batches < len(urls), counts.batches - batches
    for index, answer in enumerate(answers[:-1]):
        entity = made[index % 12]
        if entity["n"] % 2 == 0:
            assert answer.status_code == 200 and answer.json() == entity
            assert answer.headers["etag"] == '"1"'
        else:
            assert_api_error(answer, 404, "NOT_FOUND")
    assert_api_error(answers[-1], 404, "NOT_FOUND")
    # The admin reads them all at once, with PATCHes (which read first) among the reads.
    changes = [admin.patch(f"/api/v1/{store}/{m['_id']}", json={"seen": True}) for m in made[:4]]
    reads = [admin.get(f"/api/v1/{store}/{m['_id']}") for m in made[4:]]
    outcomes = await asyncio.gather(*changes, *reads)
    assert [o.status_code for o in outcomes] == [200] * 12
    assert [o.json()["n"] for o in outcomes] == list(range(12))
    assert all(o.json()["seen"] for o in outcomes[:4])
