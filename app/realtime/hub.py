"""Subscriptions: the one place that decides which change reaches which socket.

Both protocol fronts hand their clients here (``Dispatcher``). Changes arrive from the
process's single ``ChangeSource`` and are routed in memory by store and id. A subscriber gets
an event only if they may read the entity after the change (create, update, enter) or could
read it before (delete, leave); entities are projected by the subscription's ``only``.

A new subscription hears of the changes made after the database time it noted when the
subscribe arrived (``Subscription.after``): every one made after its ack, none made before
the subscribe (a stream reopened for its store may start a little earlier).

Resume: a ``subscribe`` carrying the ``resume`` token of the last event a client received
first replays, from a stream of its own, the changes of that store between the token and a
fixed end: a marker written into the database's history (``Storage.fence``) once the
subscription is in place, so that the live source holds back, from a point before the
marker, every change it hands over for the store. The replay reads to the marker (an empty
read on the way is not the end: a database may answer one for a stretch of other changes);
the held changes after it follow, so the client sees one ordered sequence with no gap and no
duplicate, and the replay ends however fast writes continue. Each subscription's events wait
for its own ack; the socket's other subscriptions keep receiving. What a replay holds is
bounded (``QUEUE_LIMIT``), and so is how many replays run at once (``REPLAY_LIMIT``, as many
waiting at most ``REPLAY_WAIT_S``; past that the ack is ``UNAVAILABLE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pymongo
from bson import ObjectId
from bson.timestamp import Timestamp

from app import filters, validation
from app.acl import Principal, readers_in
from app.admission import Lane
from app.errors import (
    APIError,
    BadRequest,
    Conflict,
    Internal,
    Invalid,
    NotFound,
    ResumeExpired,
    TooManyRequests,
    Unavailable,
)
from app.filters import Where
from app.query import Only, only_fields
from app.realtime.changes import STORE_OPERATIONS, Change, ChangeSource, Position
from app.realtime.events import Rendered, encode, operation
from app.realtime.outbox import Outbox
from app.realtime.peers import Peer
from app.storage import FENCES, Document, change_stream

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100
QUEUE_LIMIT = 10_000
REPLAY_LIMIT = 32  # resumes replaying at once in a process (each reads a stream of its own)
REPLAY_WAIT_S = 2.0  # how long a resume waits for a free replay before it is refused
FANOUT_SLICE = 200  # subscribers served between two turns of the event loop
LIVENESS_SECONDS = 1.0
DRAIN_S = 3.0  # how long a stopping server gives the fronts to end their sessions
LIVENESS_DEADLINE_S = 5.0  # one credential check may not hold up the others for longer
_SUBSCRIBE_KEYS = frozenset({"store", "id", "only", "resume", "where"})


@dataclass(eq=False)
class Subscription:
    id: str
    client: Client
    store: str
    entity_id: ObjectId | None
    only: Only | None
    where: Where | None = None
    # Changes at or before this database time were made before the subscribe: not for it.
    after: Timestamp | None = None
    live: bool = True  # False while a resume replays: live changes wait in ``held``
    held: list[Change] = field(default_factory=list)
    acked: bool = False  # False until the subscribe's ack is on its way: events wait
    pending: list[str] = field(default_factory=list)
    removed: bool = False  # unsubscribed, or its socket gone: a fan-out under way skips it

    def wants(self, change: Change) -> bool:
        if self.after is not None:
            if change.position.time <= self.after:
                return False
            self.after = None  # changes come in order: every later one is after it too
        return self.entity_id is None or self.entity_id == change.id

    def deliver(self, payload: str) -> None:
        if self.acked:
            self.client.outbox.put(payload)
        elif len(self.pending) < QUEUE_LIMIT:
            self.pending.append(payload)
        else:
            self.client.close()

    def hold(self, change: Change) -> None:
        if len(self.held) < QUEUE_LIMIT:
            self.held.append(change)
        else:
            self.client.close()  # too far behind; the client resumes from its last token

    def ack(self) -> None:
        """The ack has been queued: what waited for it follows, in order."""
        self.acked = True
        for payload in self.pending:
            self.client.outbox.put(payload)
        self.pending.clear()


class Client:
    """A connected peer: who they are, their subscriptions, and their outgoing events (so a
    slow socket never slows the change source or the other sockets)."""

    def __init__(self, peer: Peer):
        self.peer = peer
        self.subscriptions: dict[str, Subscription] = {}
        self._closer: asyncio.Task[None] | None = None
        self.set_principal(peer.principal)
        # Past QUEUE_LIMIT waiting events the socket is closed: the client resumes from its
        # last token.
        self.outbox = Outbox(
            functools.partial(peer.emit_encoded, "change"),
            QUEUE_LIMIT,
            self.close,
            now=functools.partial(peer.emit_now, "change"),
        )

    def set_principal(self, principal: Principal) -> None:
        self.principal = principal
        self.keys = frozenset(principal.reader_keys())
        self.reader = _reader(self.keys, principal.admin)

    def may_read(self, document: dict[str, Any] | None) -> bool:
        if document is None:
            return False
        return self.principal.admin or not self.keys.isdisjoint(readers_in(document))

    def close(self) -> None:
        """Disconnect the socket, once, without waiting for it."""
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self.peer.close())


_READERS: dict[tuple[frozenset[str], bool], tuple[frozenset[str], bool]] = {}
_UNKNOWN = "?"  # not an op: this reader's op is not known yet
_MOST_READERS = 10_000


def _reader(keys: frozenset[str], admin: bool) -> tuple[frozenset[str], bool]:
    """What a client may read depends only on its reader keys and whether it is an admin;
    clients alike share one such tuple, so that a fan-out finds their op by identity, without
    comparing key sets (forgotten past ``_MOST_READERS`` kinds: only sharing is lost)."""
    wanted = (keys, admin)
    found = _READERS.get(wanted)
    if found is None:
        if len(_READERS) >= _MOST_READERS:
            _READERS.clear()
        found = _READERS[wanted] = wanted
    return found


def subscriber_event(sub: Subscription, rendered: Rendered) -> str | None:
    """The ``change`` payload, as JSON text, that ``sub``'s client may see, or None."""
    client = sub.client
    where = sub.where
    if where is None:
        # Readers alike share one op.
        reader = client.reader
        op = rendered.ops.get(reader, _UNKNOWN)
        if op is _UNKNOWN:
            op = rendered.ops[reader] = operation(rendered.change, client.may_read, reader[1])
    else:
        admin = client.principal.admin

        def visible(document: dict[str, Any] | None) -> bool:
            return client.may_read(document) and where.matches(document)

        op = operation(rendered.change, visible, admin)
    return None if op is None else encode(rendered, sub.id, op, sub.only)


def replay_pipeline(store: str, fence: Any) -> list[Document]:
    """A resume's stream: the store's changes, and the one marker that ends the replay."""
    return [
        {
            "$match": {
                "$or": [
                    {"operationType": {"$in": STORE_OPERATIONS}, "ns.coll": store},
                    {"operationType": "insert", "ns.coll": FENCES, "documentKey._id": fence},
                ]
            }
        }
    ]


def safe_event(sub: Subscription, rendered: Rendered) -> str | None:
    """``subscriber_event``, or None (logged) for a change that cannot be rendered: one odd
    document, which another program may have stored, never stops the events after it."""
    try:
        return subscriber_event(sub, rendered)
    except Exception:
        log.exception("could not render a change of %s", rendered.change.store)
        return None


def event_for(sub: Subscription, rendered: Rendered) -> dict[str, Any] | None:
    """``subscriber_event`` as a dict (for tests and tools)."""
    encoded = subscriber_event(sub, rendered)
    return None if encoded is None else dict(orjson.loads(encoded))


class Hub:
    def __init__(self, max_sockets: int = 50_000, max_sockets_per_user: int = 500) -> None:
        self.services: Services | None = None
        self.source: ChangeSource | None = None
        self.clients: dict[int, Client] = {}
        self.max_sockets = max_sockets
        self.max_sockets_per_user = max_sockets_per_user
        self._per_user: Counter[str] = Counter()  # connected sockets by user id
        self.by_store: dict[str, set[Subscription]] = defaultdict(set)
        self._liveness: asyncio.Task[None] | None = None
        # Changes whose events are still to be rendered and queued, oldest first.
        self._fanout: deque[tuple[Rendered, list[Subscription]]] = deque()
        self._fanout_ready = asyncio.Event()
        self._fanout_task: asyncio.Task[None] | None = None
        self.replays = Lane("replay", REPLAY_LIMIT)
        self._drainers: list[Callable[[], Awaitable[None]]] = []

    async def start(self, services: Services) -> None:
        self.services = services
        # Only the stores this process's sockets watch: the database drops the rest.
        self.source = ChangeSource(services.storage, self.publish, stores=self.by_store.keys)
        self.source.start()
        self._liveness = asyncio.create_task(self._check_credentials(), name="socket-liveness")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.source.ready.wait(), 10)

    def on_drain(self, drainer: Callable[[], Awaitable[None]]) -> None:
        """Have ``drain`` call ``drainer`` (a front's way to end the sessions it holds)."""
        self._drainers.append(drainer)

    async def drain(self) -> None:
        """The server is stopping and takes no new connections: end the sessions that would
        keep it waiting, within ``DRAIN_S``. Run before the server waits for its open
        requests (``app.serving``); ``stop`` comes after them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_S):
                for drainer in self._drainers:
                    await drainer()

    async def stop(self) -> None:
        if self._liveness is not None:
            self._liveness.cancel()
            await asyncio.gather(self._liveness, return_exceptions=True)
        if self.source is not None:
            await self.source.stop()
        if self._fanout_task is not None:
            self._fanout_task.cancel()
            await asyncio.gather(self._fanout_task, return_exceptions=True)
        # Together: a close may wait up to a few seconds for a client that stopped reading.
        closes = [client.peer.close() for client in list(self.clients.values())]
        await asyncio.gather(*closes, return_exceptions=True)

    # --- Dispatcher ------------------------------------------------------------------------

    def attach(self, peer: Peer) -> None:
        """Take a socket whose credentials were checked. Refused (the front answers the
        connect with the error) past ``max_sockets_per_user`` sockets of one user (429) or
        ``max_sockets`` in this process (503): one user, or a flood of sockets, cannot take
        all of a process's memory and file descriptors."""
        user = peer.principal.user_id
        if len(self.clients) >= self.max_sockets:
            raise Unavailable(
                f"This server process holds {self.max_sockets} sockets (MAX_SOCKETS); "
                "connect again shortly",
                retry_after=5,
            )
        if self._per_user[user] >= self.max_sockets_per_user:
            raise TooManyRequests(
                f"A user may hold at most {self.max_sockets_per_user} sockets at once on one "
                "server process (MAX_SOCKETS_PER_USER); close one first",
                retry_after=5,
            )
        self.clients[id(peer)] = Client(peer)
        self._per_user[user] += 1

    async def detach(self, peer: Peer) -> None:
        client = self.clients.pop(id(peer), None)
        if client is None:
            return
        user = client.principal.user_id
        self._per_user[user] -= 1
        if self._per_user[user] <= 0:
            del self._per_user[user]
        for sub in list(client.subscriptions.values()):
            self._remove(sub)
        await client.outbox.close()

    async def handle(self, peer: Peer, event: str, data: Any) -> dict[str, Any]:
        client = self.clients.get(id(peer))
        try:
            if client is None:
                raise BadRequest("Not connected")
            if event == "subscribe":
                # The same deadline for its database work as a REST request has.
                services = self._services()
                deadline = services.storage.request_timeout(services.settings.db_timeout_ms / 1000)
                with pymongo.timeout(deadline):
                    return await self._subscribe(client, data)
            if event == "unsubscribe":
                return self._unsubscribe(client, data)
            raise NotFound(f"Unknown event {event!r}; use subscribe or unsubscribe")
        except APIError as error:
            return error.body()
        except Exception:
            log.exception("socket event %r failed", event)
            return Internal().body()

    # --- routing ---------------------------------------------------------------------------

    def publish(self, change: Change) -> None:
        """Route one change to every live subscription of its store (no awaiting here).

        Which subscriptions hear of it, and which of them are holding changes back for a
        replay, is settled now, in the order changes arrive; rendering and queueing each
        one's event is left to the fan-out task, which yields to the rest of the server every
        ``FANOUT_SLICE`` subscribers, so a change with 10,000 subscribers never holds up a
        REST request for longer than one slice."""
        subscriptions = self.by_store.get(change.store)
        if not subscriptions:
            return
        live: list[Subscription] = []
        for sub in subscriptions:
            if not sub.wants(change):
                continue
            if sub.live:
                live.append(sub)
            else:
                sub.hold(change)
        if live:
            self._fanout.append((Rendered(change, self._services().tokens), live))
            self._fanout_ready.set()
            if self._fanout_task is None or self._fanout_task.done():
                self._fanout_task = asyncio.create_task(self._fan_out(), name="fan-out")

    async def _fan_out(self) -> None:
        while True:
            await self._fanout_ready.wait()
            self._fanout_ready.clear()
            while self._fanout:
                rendered, subscriptions = self._fanout.popleft()
                for index, sub in enumerate(subscriptions):
                    if index and not index % FANOUT_SLICE:
                        await asyncio.sleep(0)  # let requests and socket writes run
                    if sub.removed:
                        continue  # unsubscribed or disconnected meanwhile
                    payload = safe_event(sub, rendered)
                    if payload is not None:
                        sub.deliver(payload)

    # --- events ----------------------------------------------------------------------------

    async def _subscribe(self, client: Client, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise BadRequest("subscribe takes an object: {store, id?, only?, where?, resume?}")
        for key in data:
            if key not in _SUBSCRIBE_KEYS:
                raise Invalid(key, "is not a subscribe option")
        named = data.get("store")
        store = validation.store_name(named if isinstance(named, str) else "")
        entity_id = validation.object_id(data["id"]) if data.get("id") is not None else None
        only = None
        if data.get("only") is not None:
            if not isinstance(data["only"], str):
                raise Invalid("only", "expected a comma-separated list of field names")
            only = only_fields(data["only"])
        where = filters.from_json(data["where"]) if data.get("where") is not None else None
        services = self._services()
        resume = services.tokens.read(data["resume"]) if data.get("resume") is not None else None
        if len(client.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise Conflict(f"A socket may hold at most {MAX_SUBSCRIPTIONS} subscriptions")
        if entity_id is not None and resume is None:
            await services.entities.get(store, entity_id, client.principal)  # 404 if unreadable

        sub = Subscription(secrets.token_hex(8), client, store, entity_id, only, where)
        if resume is None:
            sub.after = await self._now(services)
            self._add(sub)
        else:
            if not await self.replays.enter(REPLAY_WAIT_S):
                raise Unavailable("Too many resumes at once; try again shortly", retry_after=1)
            try:
                # Added before anything awaits: every change the live source hands over for
                # the store from now on reaches ``held``; the replay brings those before the
                # marker.
                sub.live = False
                self._add(sub)
                await self._replay(sub, resume)
            except BaseException:
                self._remove(sub)
                raise
            finally:
                self.replays.leave()
        # Run on the next loop turn, after the front has queued the ack.
        asyncio.get_running_loop().call_soon(sub.ack)
        return {"success": True, "subscription": sub.id}

    def _unsubscribe(self, client: Client, data: Any) -> dict[str, Any]:
        wanted = data.get("subscription") if isinstance(data, dict) else None
        sub = client.subscriptions.get(wanted) if isinstance(wanted, str) else None
        if sub is None:
            raise NotFound(f"No subscription {wanted!r} on this socket")
        self._remove(sub)
        return {"success": True}

    async def _now(self, services: Services) -> Timestamp | None:
        """The database's time, or None (and every change the stream hands over) when it
        cannot be read: the stream reports the outage itself."""
        try:
            return await services.storage.cluster_time()
        except APIError as exc:
            log.warning("no database time for a new subscription: %r", exc)
            return None

    async def _replay(self, sub: Subscription, resume: Position) -> None:
        """Deliver what ``sub`` missed after ``resume`` up to a marker written now, then
        release what was held back after it."""
        services = self._services()
        storage, tokens = services.storage, services.tokens
        fence = await storage.fence()
        replayed = 0
        async with change_stream(
            storage, replay_pipeline(sub.store, fence), {"_data": resume.data}, max_await_ms=50
        ) as stream:
            while True:
                event = await stream.try_next()
                if event is None:
                    continue  # not the end: that is the marker (the deadline bounds the wait)
                if event["ns"]["coll"] == FENCES:
                    end: Timestamp = event["clusterTime"]
                    break
                try:
                    change = Change.from_event(event)
                except Exception:  # as the live source does: skipped, never the end
                    log.exception("could not read a change of %s to replay", sub.store)
                    continue
                if change is None:
                    continue
                replayed += 1
                if replayed > QUEUE_LIMIT:
                    raise ResumeExpired(
                        f"More than {QUEUE_LIMIT} changes were missed; reload by REST and "
                        "subscribe again"
                    )
                if sub.wants(change):
                    payload = safe_event(sub, Rendered(change, tokens))
                    if payload is not None:
                        sub.deliver(payload)
        # Everything before the marker came from the replay; what was held after it goes next,
        # and so does what the live source, which may lag behind the replay, hands over later.
        sub.after = end
        for change in sub.held:
            if sub.wants(change):
                payload = safe_event(sub, Rendered(change, tokens))
                if payload is not None:
                    sub.deliver(payload)
        sub.held.clear()
        sub.live = True

    def _add(self, sub: Subscription) -> None:
        """Put ``sub`` in place; checked here, after whatever the subscribe awaited, since a
        front may run a socket's events side by side and the socket may have gone
        meanwhile: a subscription added then would stay in the hub for good."""
        client = sub.client
        if self.clients.get(id(client.peer)) is not client:
            raise Conflict("The socket closed before the subscription was in place")
        if len(client.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise Conflict(f"A socket may hold at most {MAX_SUBSCRIPTIONS} subscriptions")
        client.subscriptions[sub.id] = sub
        self.by_store[sub.store].add(sub)
        if self.source is not None:
            self.source.refresh()  # a store not followed yet is, from now on

    def _remove(self, sub: Subscription) -> None:
        sub.removed = True
        sub.client.subscriptions.pop(sub.id, None)
        self.by_store[sub.store].discard(sub)
        if not self.by_store[sub.store]:
            del self.by_store[sub.store]

    def _services(self) -> Services:
        if self.services is None:
            raise Internal("Realtime is not started")
        return self.services

    def require_services(self) -> Services:
        """The services the hub was started with (for the fronts' authenticator)."""
        return self._services()

    async def _check_credentials(self) -> None:
        """Close sockets whose session or token has ended; follow users' group changes."""
        while True:
            await asyncio.sleep(LIVENESS_SECONDS)
            credentials = self._services().credentials
            seen: dict[str, Principal | None] = {}
            for client in list(self.clients.values()):
                credential = client.principal.credential
                try:
                    if credential not in seen:
                        with pymongo.timeout(LIVENESS_DEADLINE_S):
                            seen[credential] = await credentials.current(client.principal)
                except APIError:
                    continue  # database unreachable: keep the socket, check again later
                current = seen[credential]
                if current is None:
                    client.close()
                elif current is not client.principal:
                    if current == client.principal:
                        # The same user as before: keep the cached object, so that the next
                        # checks compare identities, not every field (10,000 sockets a second).
                        client.principal = current
                    else:
                        client.set_principal(current)
