"""The client side of ``scripts/bench_realtime.py``, one child process each: a share of the
Socket.IO subscribers (``subscribe``), or a plain PyMongo change-stream watcher (``watch``).

Both note the wall-clock time (``time.time()``, comparable across processes on one machine)
at which every benchmark write, told apart by its ``seq`` field, reaches them. The parent
talks to a worker in JSON lines: the worker prints ``{"ready": ...}`` once it listens, then
reads ``{"expect": n, "drain": seconds}``, waits until each of its clients holds ``n`` writes
or the drain time is up, saves its receipts to ``--out`` and prints ``{"done": true}``. When
its stdin closes (the parent went away) it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import socketio
import uvloop
from bench_sio_lean import LeanSocket, subscribe
from pymongo import AsyncMongoClient

CLOSE_TIMEOUT = 10.0


class Subscribers:
    """``count`` Socket.IO clients (EIO=4, websocket only), each subscribed to ``store``:
    python-socketio's (``--client python-socketio``) or the lean one (``bench_sio_lean.py``)."""

    def __init__(self, opts: argparse.Namespace, token: str):
        self.opts = opts
        self.token = token
        self.clients: dict[int, socketio.AsyncClient | LeanSocket] = {}
        self.counts = [0] * opts.count
        self.receipts: list[tuple[int, int, float]] = []  # (client, seq, received at)
        self.errors: Counter[str] = Counter()
        self.disconnects = 0
        self.done = asyncio.Event()
        self.target: int | None = None
        self.short = 0  # clients still below target

    async def open(self) -> dict[str, Any]:
        """Connect and subscribe in batches, so the handshakes do not all pile up at once."""
        for first in range(0, self.opts.count, self.opts.batch):
            last = min(self.opts.count, first + self.opts.batch)
            await asyncio.gather(*(self._open_one(index) for index in range(first, last)))
        return {"connected": len(self.clients), "errors": dict(self.errors)}

    async def _open_one(self, index: int) -> None:
        if self.opts.client == "lean":
            try:
                async with asyncio.timeout(self.opts.connect_timeout):
                    self.clients[index] = await subscribe(
                        self.opts.url,
                        self.token,
                        self.opts.store,
                        self._recorder(index),
                        self._on_disconnect,
                    )
            except Exception as exc:
                self.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            return
        client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        client.on("change", self._recorder(index))
        client.on("disconnect", self._on_disconnect)
        limit = self.opts.connect_timeout
        try:
            async with asyncio.timeout(limit):
                await client.connect(
                    self.opts.url,
                    auth={"token": self.token},
                    transports=["websocket"],
                    wait_timeout=limit,
                )
                ack = await client.call("subscribe", {"store": self.opts.store}, timeout=limit)
            if not (isinstance(ack, dict) and ack.get("success")):
                raise RuntimeError(f"subscribe refused: {ack!r}")
        except Exception as exc:
            self.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), CLOSE_TIMEOUT)
            return
        self.clients[index] = client

    def _recorder(self, index: int) -> Any:
        def record(data: Any) -> None:
            received = time.time()
            entity = data.get("entity") if isinstance(data, dict) else None
            seq = entity.get("seq") if isinstance(entity, dict) else None
            if isinstance(seq, int):
                self.receipts.append((index, seq, received))
                self.counts[index] += 1
                if self.counts[index] == self.target:
                    self.short -= 1
                    if self.short <= 0:
                        self.done.set()

        return record

    def _on_disconnect(self, *_: Any) -> None:
        self.disconnects += 1

    def expect(self, target: int) -> asyncio.Event:
        """An event set once every connected client holds ``target`` writes."""
        self.target = target
        self.short = sum(self.counts[index] < target for index in self.clients)
        if self.short <= 0:
            self.done.set()
        return self.done

    def result(self) -> dict[str, Any]:
        return {
            "connected": len(self.clients),
            "disconnects": self.disconnects,
            "receipts": self.receipts,
        }

    async def close(self) -> None:
        # Counted disconnects are the server's doing; ours come after the result is taken.
        lean = [c for c in self.clients.values() if isinstance(c, LeanSocket)]
        for socket in lean:
            socket.closed = True  # our own close is not counted as a disconnect
            socket.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        client.disconnect()
                        for client in self.clients.values()
                        if isinstance(client, socketio.AsyncClient)
                    ),
                    return_exceptions=True,
                ),
                CLOSE_TIMEOUT,
            )


class Watcher:
    """One change stream on the baseline collection, read straight through PyMongo."""

    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            opts.url, serverSelectionTimeoutMS=int(opts.connect_timeout * 1000)
        )
        self.receipts: list[tuple[int, float]] = []  # (seq, received at)
        self.reader: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.target: int | None = None

    async def open(self) -> dict[str, Any]:
        collection = self.client[self.opts.database][self.opts.collection]
        # The same server-side wait per getMore as the platform's own change stream.
        stream = await collection.watch(max_await_time_ms=self.opts.max_await_ms)
        self.reader = asyncio.create_task(self._read(stream))
        return {"connected": 1, "errors": {}}

    async def _read(self, stream: Any) -> None:
        try:
            async for event in stream:
                received = time.time()
                seq = (event.get("fullDocument") or {}).get("seq")
                if isinstance(seq, int):
                    self.receipts.append((seq, received))
                    if len(self.receipts) == self.target:
                        self.done.set()
        finally:
            await stream.close()

    def expect(self, target: int) -> asyncio.Event:
        self.target = target
        if len(self.receipts) >= target:
            self.done.set()
        return self.done

    def result(self) -> dict[str, Any]:
        return {"connected": 1, "disconnects": 0, "receipts": self.receipts}

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.wait([self.reader], timeout=CLOSE_TIMEOUT)
        await asyncio.wait_for(self.client.close(), CLOSE_TIMEOUT)


def _tell(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.flush()


async def _stdin() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve(opts: argparse.Namespace) -> None:
    parent = await _stdin()
    clients: Subscribers | Watcher
    if opts.mode == "subscribe":
        clients = Subscribers(opts, os.environ["BENCH_TOKEN"])
    else:
        clients = Watcher(opts)
    try:
        opened = await clients.open()
        # A short-lived load generator: no cyclic collector from here on. With thousands of
        # sockets and every receipt kept, its passes grew to pauses that delayed when events
        # were seen, and the client must not be what is measured.
        gc.collect()
        gc.freeze()
        gc.disable()
        _tell({"ready": opened})
        line = await parent.readline()
        if not line:
            return  # the parent is gone
        order = orjson.loads(line)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(clients.expect(order["expect"]).wait(), order["drain"])
        await asyncio.to_thread(Path(opts.out).write_bytes, orjson.dumps(clients.result()))
        _tell({"done": True})
        # Stay until the parent closes our stdin, so its CPU reading still finds us.
        await parent.read()
    finally:
        await clients.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["subscribe", "watch"])
    parser.add_argument("--url", required=True, help="server URL, or MongoDB URL to watch")
    parser.add_argument("--out", required=True, help="file the receipts are saved to")
    parser.add_argument("--deadline", type=float, required=True, help="seconds to live at most")
    parser.add_argument("--connect-timeout", type=float, default=20.0)
    parser.add_argument("--store", help="subscribe: the store to follow")
    parser.add_argument("--count", type=int, default=1, help="subscribe: number of clients")
    parser.add_argument("--batch", type=int, default=50, help="subscribe: connects at a time")
    parser.add_argument("--client", choices=["lean", "python-socketio"], default="lean")
    parser.add_argument("--database", help="watch: database name")
    parser.add_argument("--collection", help="watch: collection name")
    parser.add_argument("--max-await-ms", type=int, default=500, help="watch: getMore wait")
    return parser.parse_args(argv)


async def _main(opts: argparse.Namespace) -> None:
    async with asyncio.timeout(opts.deadline):
        await serve(opts)


if __name__ == "__main__":
    try:
        uvloop.run(_main(parse_args()))
    except TimeoutError:
        sys.exit("bench worker: deadline reached")
