"""Storage.entity, the one read of an entity by id: the driver's plain ``find`` command, retried
once, as the driver retries reads, when its connection was lost under it.

The database is reached through a small TCP relay on loopback that can cut the connections
that have carried a ``find`` (the driver's monitoring connections stay up), so the next read
meets a dead pooled connection, as after a network blip or a primary's restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from app.storage import Storage

pytestmark = pytest.mark.asyncio

FIND = b"\x02find\x00"  # a BSON string element named "find": the command's first field


class Relay:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self.accepted = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        carried_find = [False]
        self._pairs.append((writer, up_writer, carried_find))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, watch: bool):
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await source.read(65536):
                    if watch and FIND in chunk:
                        carried_find[0] = True
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    def cut_reads(self) -> int:
        """Close every connection that has carried a find; how many were cut."""
        cut = 0
        for client_side, upstream, carried_find in self._pairs:
            if carried_find[0] and not client_side.is_closing():
                client_side.transport.abort()
                upstream.transport.abort()
                cut += 1
        return cut

    async def stop(self) -> None:
        for client_side, upstream, _ in self._pairs:
            client_side.transport.abort()
            upstream.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def storage_through_relay(
    mongodb_url: str, query: str = ""
) -> AsyncIterator[tuple[Storage, Relay]]:
    relay = Relay(urlsplit(mongodb_url).port or 27017)
    await relay.start()
    storage = Storage(
        f"mongodb://127.0.0.1:{relay.port}/?directConnection=true{query}",
        f"point-{ObjectId()}",
        timeout_ms=5000,
    )
    try:
        yield storage, relay
    finally:
        await storage.close()
        await relay.stop()


async def _stored(storage: Storage) -> ObjectId:
    entity_id = ObjectId()
    await storage.store("things").insert_one({"_id": entity_id, "name": "one", "n": 1})
    found = await storage.entity("things", entity_id)
    assert found == {"_id": entity_id, "name": "one", "n": 1}
    return entity_id


async def test_an_entity_by_id_and_none_for_an_unknown_id(mongodb_url):
    async with storage_through_relay(mongodb_url) as (storage, _):
        await _stored(storage)
        assert await storage.entity("things", ObjectId()) is None
        assert await storage.entity("no-such-store", ObjectId()) is None


async def test_a_read_whose_connection_was_cut_is_retried_once(mongodb_url):
    async with storage_through_relay(mongodb_url) as (storage, relay):
        entity_id = await _stored(storage)
        before = relay.accepted
        assert relay.cut_reads() >= 1
        found = await storage.entity("things", entity_id)
        assert found is not None and found["name"] == "one"
        assert relay.accepted > before  # the second attempt ran on a new connection


async def test_with_retry_reads_off_in_the_url_a_cut_connection_is_an_error(mongodb_url):
    async with storage_through_relay(mongodb_url, "&retryReads=false") as (storage, relay):
        entity_id = await _stored(storage)
        assert relay.cut_reads() >= 1
        with pytest.raises(AutoReconnect):
            await storage.entity("things", entity_id)
        # The next read finds the server again.
        assert (await storage.entity("things", entity_id) or {}).get("name") == "one"
