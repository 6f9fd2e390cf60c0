"""Expiry of system records by the server itself (``app.expiry``), in small deletes over an
index, in place of TTL indexes (whose sweeper in the embedded database reads every record of
their collections once a minute, holding up every other operation meanwhile)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson.datetime_ms import DatetimeMS
from pymongo import AsyncMongoClient, monitoring

from app import expiry
from app.expiry import Expiry, Rule, rules
from app.storage import HISTORY, SESSIONS, SYSTEM_CODEC, TOKENS, Storage
from tests.e2e.conftest import make_settings
from tests.e2e.support import raw_database, running
from tests.helpers import unique

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def storage(mongodb_url: str) -> AsyncIterator[Storage]:
    made = Storage(mongodb_url, unique("expiry"))
    await made.prepare_system()
    yield made
    await made.client.drop_database(made.db.name)
    await made.close()


@pytest.fixture
async def deletes(storage: Storage, mongodb_url: str) -> AsyncIterator[list[int]]:
    """The ``n`` of every delete ``storage`` sends from here on, in order."""
    listener = Deletes()
    watched: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_url, event_listeners=[listener]
    )
    storage.system = lambda name: watched[storage.db.name].get_collection(  # type: ignore[method-assign]
        name, codec_options=SYSTEM_CODEC
    )
    yield listener.counts
    await watched.close()


class Deletes(monitoring.CommandListener):
    """The ``n`` of every delete command that succeeded."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "delete":
            self.counts.append(int(event.reply.get("n", 0)))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_pass_deletes_each_collections_expired_records_and_keeps_the_rest(storage):
    kept_rules = rules(3600)
    sweeper = Expiry(storage, kept_rules)
    await sweeper.prepare()
    moment = datetime.now(UTC)
    for rule in kept_rules:
        past = moment - timedelta(seconds=rule.after_s)
        await storage.system(rule.collection).insert_many(
            [
                {"_id": "gone", rule.field: past - timedelta(seconds=10)},
                {"_id": "kept", rule.field: past + timedelta(seconds=60)},
                {"_id": "no time"},  # nothing to expire it by: left alone
                {"_id": "not a date", rule.field: "2001-01-01"},
            ]
        )
    assert await sweeper.sweep(moment) == len(kept_rules)
    for rule in kept_rules:
        left = await storage.system(rule.collection).distinct("_id")
        assert sorted(left) == ["kept", "no time", "not a date"], rule
    assert await sweeper.sweep(moment + timedelta(seconds=30)) == 0
    # The kept ones expire in their turn; the pass starts where the last one ended.
    assert await sweeper.sweep(moment + timedelta(seconds=61)) == len(kept_rules)


async def test_dates_another_program_stored_before_1970_go_at_once(storage, deletes):
    """Windows start in 1970, not at year 1. (MongoDB could also hold dates Python's datetime
    cannot, which the probe reads clamped; the embedded database refuses to store them.)"""
    rules_here = (Rule(SESSIONS, "expiresAt", 0), Rule(TOKENS, "expiresAt", 0))
    sweeper = Expiry(storage, rules_here)
    moment = datetime.now(UTC)
    for rule in rules_here:
        await storage.system(rule.collection).insert_many(
            [
                {"_id": "ancient", "expiresAt": datetime(1, 1, 2, tzinfo=UTC)},
                {"_id": "1969", "expiresAt": DatetimeMS(-1000)},
                {"_id": "gone", "expiresAt": moment - timedelta(days=3)},
                {"_id": "kept", "expiresAt": moment + timedelta(days=1)},
            ]
        )
    assert await sweeper.sweep(moment) == 2  # those the walk counts; the rest went at once
    for rule in rules_here:
        assert await storage.system(rule.collection).distinct("_id") == ["kept"]
    # From 1970 the windows (at most a year each) reach now in about 70 deletes per
    # collection; from year 1 they would take over 2,000.
    assert len(deletes) < 2 * 100, len(deletes)


async def test_a_backlog_goes_in_small_deletes_and_bounded_passes(storage, deletes):
    rule = Rule(HISTORY, "at", 86400)
    sweeper = Expiry(storage, (rule,), batch=10, most_per_pass=60)
    await sweeper.prepare()
    moment = datetime.now(UTC)
    oldest = moment - timedelta(days=3)
    spread = [{"at": oldest + timedelta(minutes=n)} for n in range(150)]
    together = [{"at": oldest + timedelta(hours=1)} for _ in range(40)]  # one millisecond
    live = [{"at": moment - timedelta(hours=1)} for _ in range(5)]
    await storage.system(HISTORY).insert_many(spread + together + live)

    first = await sweeper.sweep(moment)
    assert 60 <= first <= 60 + 40 + 40  # stopped once past most_per_pass
    passes = 1
    while await storage.system(HISTORY).count_documents({}) > 5 and passes < 20:
        await sweeper.sweep(moment)
        passes += 1
    assert await storage.system(HISTORY).count_documents({}) == 5
    assert sum(deletes) == 190
    # Windows aim at 10 records and change at most fourfold a step: the records of one
    # millisecond go together (40), no delete took much of the backlog.
    assert max(deletes) <= 40 + 40, deletes
    assert len([n for n in deletes if n]) >= 190 // 20


async def test_a_record_stored_late_with_an_old_time_goes_once_the_oldest_is_sought_again(
    storage, monkeypatch
):
    clock = [1000.0]
    monkeypatch.setattr(expiry, "_clock", lambda: clock[0])
    rule = Rule(SESSIONS, "expiresAt", 0)
    sweeper = Expiry(storage, (rule,))
    moment = datetime.now(UTC)
    sessions = storage.system(SESSIONS)
    await sessions.insert_one({"_id": "a", "expiresAt": moment - timedelta(minutes=1)})
    assert await sweeper.sweep(moment) == 1  # a first pass looks for the oldest
    await sessions.insert_one({"_id": "late", "expiresAt": moment - timedelta(hours=1)})
    clock[0] += 60
    assert await sweeper.sweep(moment + timedelta(seconds=60)) == 0  # before where it ended
    clock[0] += expiry.REFLOOR_S - 60  # an hour after the oldest was last looked for
    assert await sweeper.sweep(moment + timedelta(seconds=3600)) == 1
    assert await sessions.count_documents({}) == 0


async def test_an_earlier_versions_ttl_indexes_are_replaced_by_plain_ones(storage):
    # What the version before this one made.
    await storage.system(HISTORY).create_index("at", expireAfterSeconds=86400)
    await storage.system(SESSIONS).create_index("expiresAt", expireAfterSeconds=0)
    everything = rules(86400)
    # Two processes starting together.
    await asyncio.gather(
        Expiry(storage, everything).prepare(), Expiry(storage, everything).prepare()
    )
    for rule in everything:
        indexes = await storage.system(rule.collection).index_information()
        assert [(rule.field, 1)] in [spec["key"] for spec in indexes.values()], rule
        assert not [spec for spec in indexes.values() if "expireAfterSeconds" in spec], rule
    await Expiry(storage, everything).prepare()  # and again on the next start


async def test_the_server_expires_records_by_itself(mongodb_url, tmp_path, monkeypatch):
    monkeypatch.setattr(expiry, "EVERY_S", 0.2)
    name = unique("expiryserver")
    settings = make_settings(mongodb_url, tmp_path, MONGODB_DB=name)
    async with running(settings), raw_database(mongodb_url, name) as db:
        past = datetime.now(UTC) - timedelta(minutes=5)
        await db[SESSIONS].insert_many(
            [{"user": "x", "expiresAt": past}, {"user": "y", "expiresAt": past + timedelta(1)}]
        )
        deadline = time.monotonic() + 10
        expired = {"user": "x"}
        while await db[SESSIONS].count_documents(expired) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert await db[SESSIONS].count_documents({"user": "x"}) == 0
        assert await db[SESSIONS].count_documents({"user": "y"}) == 1
        indexes = await db[HISTORY].index_information()
        assert not [spec for spec in indexes.values() if "expireAfterSeconds" in spec]
    async with raw_database(mongodb_url, name) as db:
        await db.client.drop_database(name)


async def test_a_rule_that_fails_leaves_the_others_to_run(storage):
    broken = Rule("no$such", "at", 0)  # a name the driver refuses before sending anything
    sessions = Rule(SESSIONS, "expiresAt", 0)
    moment = datetime.now(UTC)
    await storage.system(SESSIONS).insert_one({"expiresAt": moment - timedelta(minutes=1)})
    assert await Expiry(storage, (broken, sessions)).sweep(moment) == 1
