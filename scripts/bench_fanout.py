"""CPU per delivery of the fan-out's own Python path, from a change handed to the hub to the
frame handed to each socket's transport, with no network and no database.

``--subscribers`` websocket peers of our EIO=4 front (``WirePeer`` over ``WireSocket`` with its
direct frames), each subscribed to one store as one of ``--users`` users, receive ``--changes``
inserts one after the other. Their transports take each frame with a C-level append and
nothing else, so what is measured is the hub's routing, rendering and framing: the part of a
delivery that is ours. ``scripts/bench-realtime`` measures the whole of it, the kernel's
loopback send (about half a delivery's server CPU) and real clients included.

Run with ``.venv/bin/python scripts/bench_fanout.py`` (uvloop, as the server runs).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import uvloop
from bson import ObjectId
from bson.timestamp import Timestamp
from websockets.protocol import OPEN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.acl import Principal, readers_of
from app.realtime.changes import Change, Position, ResumeTokens
from app.realtime.frames import DirectFrames
from app.realtime.hub import Hub, Subscription
from app.realtime.wire import WirePeer, WireSocket

STORE = "bench"
written: list[bytes] = []


class Transport:
    __slots__ = ()
    write = written.append

    def is_closing(self) -> bool:
        return False


def open_connection() -> Any:
    """What ``DirectFrames`` reads of uvicorn's websocket protocol, for an open connection
    that negotiated no extension."""
    writable = asyncio.Event()
    writable.set()
    conn = types.SimpleNamespace(state=OPEN, extensions=[], expect_continuation_frame=False)
    return types.SimpleNamespace(
        transport=Transport(),
        conn=conn,
        writable=writable,
        close_sent=False,
        disconnected=False,
        handshake_complete=True,
        initial_response=None,
    )


async def ignore(message: Any) -> None:
    return None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> None:
    hub = Hub()
    # Publishing needs only the services' resume tokens (each change's event carries one).
    hub.services = types.SimpleNamespace(tokens=ResumeTokens("bench"))  # type: ignore[assignment]
    subscriptions = set()
    for n in range(args.subscribers):
        user = n % args.users
        socket = WireSocket(ignore)
        socket._direct = DirectFrames(open_connection())
        peer = WirePeer(Principal(f"user{user}", f"login{user}", groups=("team",)), socket)
        hub.attach(peer)
        client = hub.clients[id(peer)]
        sub = Subscription(f"{n:016x}", client, STORE, None, None, acked=True)
        client.subscriptions[sub.id] = sub
        subscriptions.add(sub)
    hub.by_store[STORE] = subscriptions
    per_delivery = []
    for n in range(args.changes):
        entity = {"_id": ObjectId(), "name": "bench", "n": n, "text": "x" * 400}
        entity.update(owner="user0", group="team", access=[], branch=[], _rev=1)
        entity["_readers"] = readers_of("user0", "team", [], [])
        position = Position(Timestamp(int(time.time()), n + 1), "82" + "ab" * 30)
        change = Change("insert", STORE, entity["_id"], None, entity, 0, position)
        started = cpu_seconds()
        hub.publish(change)
        for _ in range(100_000):
            if len(written) >= args.subscribers:
                break
            await asyncio.sleep(0)
        else:
            raise SystemExit(f"only {len(written)} of {args.subscribers} frames were written")
        per_delivery.append((cpu_seconds() - started) / args.subscribers * 1e6)
        written.clear()
    print(
        f"{args.subscribers} subscribers ({args.users} users), {args.changes} changes: "
        f"CPU per delivery min {min(per_delivery):.2f} µs, "
        f"median {statistics.median(per_delivery):.2f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--changes", type=int, default=30)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
