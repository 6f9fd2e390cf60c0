"""The MongoDB boundary: the client, system collections, store collections, and the one place
where driver exceptions become API errors (``DuplicateKeyError`` -> Conflict, connection
failures -> Unavailable, rejected writes -> Invalid).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from contextvars import Context
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import pymongo
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.objectid import ObjectId
from bson.timestamp import Timestamp
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    CollectionInvalid,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ProtocolError,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
)

from app.acl import READERS
from app.coalesce import Coalescer
from app.deadline import Deadline
from app.errors import (
    APIError,
    Conflict,
    DeadlineExceeded,
    Internal,
    Invalid,
    ResumeExpired,
    Unavailable,
)

log = logging.getLogger(__name__)

Document = dict[str, Any]
T = TypeVar("T")

USERS = "_users"
SESSIONS = "_sessions"
TOKENS = "_tokens"
LOGIN_FAILURES = "_login_failures"
DEFINITIONS = "_stores"
IDEMPOTENCY = "_idempotency"
HISTORY = "_history"
AUDIT = "_audit"
LEASES = "_leases"
# Markers written into the change history, so that a reader of it knows where "now" was
# (``Storage.fence``); deleted after an hour (``app.expiry``).
FENCES = "_fences"
FENCE_TTL_S = 3600
BUILD_DELAY_S = 0.5  # before a background index build starts
# Index names the store definitions own; other indexes of a store are never touched by them.
UNIQUE_PREFIX = "unique:"
INDEX_PREFIX = "index:"

# Entities are read with millisecond datetimes (BSON's own precision), rendered by app.jsonio.
# Text that is not valid UTF-8 (another program may store it) reads with U+FFFD in its place
# rather than failing the read for everyone.
ENTITY_CODEC: CodecOptions[Document] = CodecOptions(
    tz_aware=False,
    datetime_conversion=DatetimeConversion.DATETIME_MS,
    unicode_decode_error_handler="replace",
)
SYSTEM_CODEC: CodecOptions[Document] = CodecOptions(tz_aware=True)

# Server error codes that mean "the change stream cannot resume from that point".
_HISTORY_LOST = {136, 280, 286}
DUPLICATE_KEY = 11000
_NAMESPACE_NOT_FOUND = 26
TOO_LARGE = 10334  # BSONObjectTooLarge: a document over the database's 16 MiB
# Codes for a write the data cannot take (a path through a string, a bad value, ...).
_REJECTED_WRITE = {2, 9, 14, 28, 40, 52, 55, 56, 57, 66, TOO_LARGE, 17419}


def _raise_api_error(exc: PyMongoError) -> None:
    if isinstance(exc, DuplicateKeyError):
        pattern = (exc.details or {}).get("keyPattern")
        if isinstance(pattern, dict) and len(pattern) == 1:
            # A store definition's unique field (or a system collection's unique key): named,
            # never the entity that holds the value already.
            field = str(next(iter(pattern)))
            raise Conflict(f"{field}: another record already has this value", field=field) from exc
        raise Conflict("A record with that unique value already exists") from exc
    if isinstance(exc, ServerSelectionTimeoutError):
        raise Unavailable() from exc
    if isinstance(exc, (NetworkTimeout, ExecutionTimeout)) or exc.timeout:
        # A request's deadline (DB_TIMEOUT_MS) ran out; the database stops the work too.
        raise DeadlineExceeded() from exc
    if isinstance(exc, (ConnectionFailure, AutoReconnect)):
        raise Unavailable() from exc
    if isinstance(exc, DocumentTooLarge):
        raise Invalid("body", "the document is larger than the database allows") from exc
    if isinstance(exc, OperationFailure) and exc.code in _HISTORY_LOST:
        raise ResumeExpired() from exc
    if isinstance(exc, WriteError) or (
        isinstance(exc, OperationFailure) and exc.code in _REJECTED_WRITE
    ):
        reason = (exc.details or {}).get("codeName") or exc.code
        raise Invalid(
            "body", f"the change cannot be applied to the stored entity ({reason})"
        ) from exc
    log.error("database error: %r", exc)
    raise Internal() from exc


async def outside_deadline(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` free of its request's database deadline (admin work that takes as long as
    the store is large: index builds, dry runs); it is still cancelled with its request."""
    return await asyncio.get_running_loop().create_task(work, context=Context())


def _per_document(exc: BulkWriteError, count: int) -> dict[int, PyMongoError]:
    """What ``insert_one`` would have raised for each document of a batch that failed in
    part: its own write error, or for one written, the batch's write concern error."""
    details = exc.details
    failed: dict[int, PyMongoError] = {}
    for error in details.get("writeErrors", []):
        index, code = error.get("index"), error.get("code")
        if isinstance(index, int) and 0 <= index < count:
            kind = DuplicateKeyError if code == DUPLICATE_KEY else WriteError
            failed[index] = kind(error.get("errmsg", ""), code, error)
    for concern in (details.get("writeConcernErrors") or [])[-1:]:
        for index in range(count):
            failed.setdefault(
                index, WriteConcernError(concern.get("errmsg", ""), concern.get("code"), concern)
            )
    return failed


def _late() -> NetworkTimeout:
    """A batch's own deadline passed (no request's reaches its task): its call was cancelled,
    and each caller gets the timeout its request's own deadline would have given."""
    return NetworkTimeout("the database did not answer within the deadline")


def write_error(error: Document) -> APIError:
    """One entry of a bulk write's ``writeErrors`` as the API error a single write gets."""
    code = error.get("code")
    if code == DUPLICATE_KEY:
        pattern = error.get("keyPattern")
        if isinstance(pattern, dict) and len(pattern) == 1:
            field = str(next(iter(pattern)))
            return Conflict(f"{field}: another record already has this value", field=field)
        return Conflict("A record with that unique value already exists")
    if code == TOO_LARGE:
        return Invalid("body", "the document is larger than the database allows")
    return Invalid("body", f"the database refused the write ({error.get('errmsg', code)})")


class translated_async:
    """Run driver calls, turning their exceptions into API errors. A class rather than an
    ``asynccontextmanager``: it wraps every database call, and a generator per call cost a
    visible share of a GET."""

    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, PyMongoError):
            _raise_api_error(exc)


def _url_options(url: str) -> set[str]:
    """The option names (lower-cased) in a MongoDB URL's query string."""
    return {name.lower() for name, _ in parse_qsl(url.partition("?")[2], keep_blank_values=True)}


PRE_IMAGES = {"enabled": True}
_MAX_CACHED_STORES = 10_000
# Concurrent inserts and reads by id of one store go to the database together, up to this
# many in one command (app.coalesce).
MOST_PER_BATCH = 100


class Storage:
    """The database handle every service is built on."""

    def __init__(
        self, url: str, db_name: str, *, timeout_ms: int = 5000, batch_timeout_s: float = 10.0
    ):
        # Keyword options override the URL's in pymongo: pass the default timeouts only where
        # the URL (MONGODB_URL, the operator's word) does not set them.
        given = _url_options(url)
        timeouts: dict[str, Any] = {
            name: timeout_ms
            for name in ("serverSelectionTimeoutMS", "connectTimeoutMS")
            if name.lower() not in given
        }
        self.client: AsyncMongoClient[Document] = AsyncMongoClient(
            url, tz_aware=True, appname="entity-platform", **timeouts
        )
        self.db: AsyncDatabase[Document] = self.client[db_name]
        self.small_batches = False  # set once a change stream's reply was too large
        # The same database, decoding dates as the entity collections do (for change streams).
        self.entity_db: AsyncDatabase[Document] = self.client.get_database(
            db_name, codec_options=ENTITY_CODEC
        )
        self._ready_stores: set[str] = set()
        self._index_builds: set[asyncio.Task[None]] = set()
        self._stores: dict[str, AsyncCollection[Document]] = {}
        self._seen_topology: object = None
        self._writable = False
        # How long a batch of coalesced calls may take (DB_TIMEOUT_MS, a point request's own).
        self.batch_timeout_s = batch_timeout_s
        self.inserts: Coalescer[Document, None] = Coalescer(
            self._insert_one, self._insert_batch, MOST_PER_BATCH
        )
        self.reads: Coalescer[ObjectId, Document | None] = Coalescer(
            self._entity_alone, self._read_batch, MOST_PER_BATCH
        )

    async def close(self) -> None:
        for task in list(self._index_builds):
            task.cancel()
        await asyncio.gather(*self._index_builds, return_exceptions=True)
        await self.inserts.close()
        await self.reads.close()
        await self.client.close()

    def system(self, name: str) -> AsyncCollection[Document]:
        return self.db.get_collection(name, codec_options=SYSTEM_CODEC)

    def store(self, name: str) -> AsyncCollection[Document]:
        # Built once per store: get_collection copies its codec options on every call.
        found = self._stores.get(name)
        if found is None:
            if len(self._stores) >= _MAX_CACHED_STORES:
                self._stores.clear()
            found = self._stores[name] = self.db.get_collection(name, codec_options=ENTITY_CODEC)
        return found

    async def entity(self, name: str, entity_id: Any) -> Document | None:
        """The entity of store ``name`` with this id, or None. Reads of one store that
        arrive together are one query (``MOST_PER_BATCH`` ids at most); a read that finds
        none on its way goes alone."""
        if type(entity_id) is not ObjectId:  # an id another program chose: alone
            return await self._entity_alone(name, entity_id)
        return await self.reads(name, entity_id)

    async def insert(self, name: str, document: Document) -> None:
        """Insert one entity into store ``name``, with the inserts of others that arrive
        together; raises what ``insert_one`` would have raised for it alone."""
        await self.inserts(name, document)

    async def _read_batch(
        self, name: str, ids: list[ObjectId]
    ) -> list[Document | BaseException | None]:
        try:
            async with Deadline(self.request_timeout(self.batch_timeout_s)):
                if len(ids) == 1:
                    return [await self._entity_alone(name, ids[0])]
                found = await self.store(name).find({"_id": {"$in": ids}}).to_list()
        except TimeoutError:
            raise _late() from None
        by_id = {document["_id"]: document for document in found}
        given: set[ObjectId] = set()
        outcome: list[Document | BaseException | None] = []
        for entity_id in ids:
            document = by_id.get(entity_id)
            if document is not None and entity_id in given:
                document = dict(document)  # asked for twice: each caller gets its own
            given.add(entity_id)
            outcome.append(document)
        return outcome

    async def _insert_one(self, name: str, document: Document) -> None:
        await self.store(name).insert_one(document)

    async def _insert_batch(
        self, name: str, documents: list[Document]
    ) -> list[BaseException | None]:
        collection = self.store(name)
        try:
            async with Deadline(self.request_timeout(self.batch_timeout_s)):
                await collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            failed = _per_document(exc, len(documents))
            return [failed.get(index) for index in range(len(documents))]
        except TimeoutError:
            raise _late() from None
        return [None] * len(documents)

    async def _entity_alone(self, name: str, entity_id: Any) -> Document | None:
        """The driver's ``find`` command with one single batch: the same query as
        ``find_one``, without the cursor object around it (about 24 of 200 µs of client CPU
        per read). Retried once, as the driver retries reads, when the first attempt lost its
        connection or its primary."""
        command: Document = {
            "find": name,
            "filter": {"_id": entity_id},
            "limit": 1,
            "singleBatch": True,
        }
        if concern := self.entity_db.read_concern.document:
            command["readConcern"] = concern
        try:
            reply = await self._read(command)
        except NetworkTimeout:
            raise  # the time is spent: another attempt would only wait again
        except AutoReconnect:
            if not self.client.options.retry_reads:
                raise
            reply = await self._read(command)
        batch: list[Document] = reply["cursor"]["firstBatch"]
        return batch[0] if batch else None

    async def _read(self, command: Document) -> Document:
        return await self.entity_db.command(
            command, read_preference=self.entity_db.read_preference, codec_options=ENTITY_CODEC
        )

    def request_timeout(self, wanted_s: float) -> float:
        """How long one request's database work may take: ``wanted_s`` while the driver sees
        a primary; while it sees none, only as long as server selection waits (the driver's
        deadline would otherwise replace that shorter wait), so requests fail fast with 503."""
        description = self.client.topology_description
        if description is not self._seen_topology:  # a new object whenever it changes
            self._seen_topology = description
            self._writable = description.has_writable_server()
        if self._writable:
            return wanted_s
        return min(wanted_s, self.client.options.server_selection_timeout)

    async def ping(self, timeout_s: float = 1.0) -> None:
        """Raises Unavailable unless the database answers within ``timeout_s`` (a health
        check must answer quickly while the database is down)."""
        async with translated_async():
            with pymongo.timeout(timeout_s):
                await self.db.command("ping")

    async def cluster_time(self) -> Timestamp | None:
        """The database's latest operation time: every write acknowledged before this call
        was committed at or before it. None when the deployment does not report one."""
        async with translated_async(), self.client.start_session() as session:
            await self.db.command("ping", session=session)
            return session.operation_time

    async def fence(self) -> ObjectId:
        """Write a marker and return its id. Its change event follows, in the database's
        history, every change acknowledged before this call: a change stream that has read
        up to that event has read all of them, whatever empty reads came on the way."""
        marker = ObjectId()
        async with translated_async():
            await self.system(FENCES).insert_one({"_id": marker, "at": datetime.now(UTC)})
        return marker

    async def prepare_system(self) -> None:
        """Indexes of the system collections; safe to run on every start. (Those on the fields
        records expire by are ``app.expiry``'s.)"""
        async with translated_async():
            await self.system(AUDIT).create_index([("user", ASCENDING), ("_id", ASCENDING)])
            await self.system(HISTORY).create_index(
                [("store", ASCENDING), ("entity", ASCENDING), ("at", ASCENDING)]
            )
            await self.system(USERS).create_index("login", unique=True)
            await self.system(SESSIONS).create_index("user")
            await self.system(TOKENS).create_index([("user", ASCENDING), ("kind", ASCENDING)])
            await self.system(LOGIN_FAILURES).create_index([("key", ASCENDING), ("at", ASCENDING)])

    def is_prepared(self, name: str) -> bool:
        return name in self._ready_stores

    async def prepare_store(self, name: str) -> None:
        """Create a store's collection (with pre-images for the change feed) and its indexes,
        once per process. A new store gets its indexes at once (there is nothing to index);
        a store that already holds entities (made elsewhere) gets them from a background
        build, outside any request's deadline: on a large store that takes a while."""
        if name in self._ready_stores:
            return
        async with translated_async():
            try:
                await self.db.create_collection(name, changeStreamPreAndPostImages=PRE_IMAGES)
                created = True
            except (CollectionInvalid, OperationFailure) as exc:
                if isinstance(exc, OperationFailure) and exc.code != 48:  # NamespaceExists
                    raise
                created = False
                await self._keep_pre_images(name)
            if created:
                await self._build_indexes(name)
        self._ready_stores.add(name)
        if not created:
            self._build_later(name)

    async def prepare_existing(self, name: str) -> None:
        """``prepare_store`` for a store seen in the change history, which never creates its
        collection: a change read after the store was dropped (the history recorder reads
        its stream a little behind, by design) must not bring back the store it was in."""
        if name in self._ready_stores or not await self._keep_pre_images(name):
            return  # ready, or dropped since: nothing to prepare
        self._ready_stores.add(name)
        self._build_later(name)

    def _build_later(self, name: str) -> None:
        # A fresh context: no request deadline reaches the build.
        task = asyncio.get_running_loop().create_task(
            self._build_indexes_quietly(name), name=f"indexes:{name}", context=Context()
        )
        self._index_builds.add(task)
        task.add_done_callback(self._index_builds.discard)

    # --- what store definitions need ---

    async def store_names(self) -> list[str]:
        """The stores that exist in the database (collections not named ``_...``)."""
        async with translated_async():
            names = await self.db.list_collection_names()
        return sorted(n for n in names if not n.startswith(("_", "system.")))

    async def store_exists(self, name: str) -> bool:
        async with translated_async():
            names = await self.db.list_collection_names(filter={"name": name})
        return name in names

    async def estimated_count(self, name: str) -> int:
        async with translated_async():
            return await self.store(name).estimated_document_count()

    async def defined_indexes(self, name: str) -> dict[str, Document]:
        """The indexes a definition made on store ``name``, by name."""
        async with translated_async():
            found = await self.store(name).index_information()
        return {
            index: spec
            for index, spec in found.items()
            if index.startswith((UNIQUE_PREFIX, INDEX_PREFIX))
        }

    async def create_unique(self, name: str, field: str) -> None:
        """A unique index over the entities that have ``field``; DuplicateKey -> 409 naming
        it when entities already share a value."""
        async with translated_async():
            await self.store(name).create_index(
                [(field, ASCENDING)],
                name=UNIQUE_PREFIX + field,
                unique=True,
                partialFilterExpression={field: {"$exists": True}},
            )

    async def create_plain_index(self, name: str, index: str, keys: list[tuple[str, int]]) -> None:
        async with translated_async():
            await self.store(name).create_index(keys, name=index)

    async def drop_index(self, name: str, index: str) -> None:
        async with translated_async():
            try:
                await self.store(name).drop_index(index)
            except OperationFailure as exc:
                if exc.code != 27:  # IndexNotFound: already gone
                    raise

    async def drop_store(self, name: str) -> None:
        async with translated_async():
            await self.db.drop_collection(name)
        self.forget_store(name)

    def forget_store(self, name: str) -> None:
        """Forget that a store was prepared (it was dropped): the next write creates it anew."""
        self._ready_stores.discard(name)

    async def _build_indexes(self, name: str) -> None:
        # Only indexes a query of ours uses, since each one costs every write: the read rule
        # with the id order (every list, meta and non-admin read) and the from/to bound. The
        # access fields are only ever matched beside an _id, never on their own.
        collection = self.store(name)
        await collection.create_index([(READERS, ASCENDING), ("_id", ASCENDING)])
        await collection.create_index("createdAt")

    async def _build_indexes_quietly(self, name: str) -> None:
        # After the write that asked for it: a database that builds an index holding a lock
        # (the embedded one does, for seconds on a large store) would otherwise hold that
        # write, depending on which of the two reaches it first.
        await asyncio.sleep(BUILD_DELAY_S)
        try:
            if not await self.store_exists(name):
                # Dropped meanwhile: building an index would make the collection again. The
                # next write prepares it anew.
                self._ready_stores.discard(name)
                return
            await self._build_indexes(name)
        except PyMongoError as exc:
            log.warning("could not build the indexes of store %s: %r", name, exc)
            self._ready_stores.discard(name)  # the next write tries again

    async def _keep_pre_images(self, name: str) -> bool:
        """Turn on pre-images for a store collection made elsewhere (deletes in the change feed
        need them); a server that cannot do so still serves REST. False when there is no such
        collection (``collMod`` never creates one)."""
        try:
            await self.db.command("collMod", name, changeStreamPreAndPostImages=PRE_IMAGES)
        except OperationFailure as exc:
            if exc.code == _NAMESPACE_NOT_FOUND:
                return False
            log.warning("cannot keep pre-images for %s: %s", name, exc)
        return True


_BAD_TOKEN = {9, 14, 260, 50811}


class ChangeStream:
    """A change stream whose update events carry the document after the change: from the
    pre-image and the update description (exact; the readers do that), or, for an update the
    database kept no pre-image of, the document as it is now, looked up here.

    The database is not asked to look up every update's document itself
    (``fullDocument: updateLookup``): that is one read per update for every open stream, and
    SecantusDB makes it before the stream's filter, so the stream of a store nobody follows
    paid for it too. Only the updates of a store written outside the API before it got its
    pre-images need the lookup."""

    def __init__(self, storage: Storage, stream: Any):
        self._storage = storage
        self._stream = stream

    @property
    def resume_token(self) -> Document | None:
        token: Document | None = self._stream.resume_token
        return token

    async def try_next(self) -> Document | None:
        try:
            event: Document | None = await self._stream.try_next()
        except ProtocolError as exc:
            _too_large(self._storage, exc)
            raise  # pragma: no cover
        if (
            event is not None
            and event.get("operationType") == "update"
            and event.get("fullDocumentBeforeChange") is None
        ):
            event["fullDocument"] = await self._storage.entity(
                event["ns"]["coll"], event["documentKey"]["_id"]
            )
        return event

    def drained(self) -> bool:
        """Whether the changes the last read brought are all handed over (the next one would
        read from the database). The driver does not say so publicly; without its buffer to
        look at, never."""
        buffered = getattr(getattr(self._stream, "_cursor", None), "_data", None)
        return buffered is not None and not buffered


class BatchTooLarge(Exception):
    """A change stream's reply was larger than the driver takes (48 MB). MongoDB caps a
    reply at 16 MB; the embedded database does not, and a hundred changes of an entity of a
    few megabytes (each carries the entity as it was) go past it. Read again in small
    batches: once it happened, every stream of the process is opened with ``SMALL_BATCH``
    (each reader reopens from its last position: the feed at once, the live ones as after any
    interruption)."""


def _too_large(storage: Storage, exc: ProtocolError) -> None:
    """Raise BatchTooLarge for a reply past the driver's size, the API error otherwise."""
    if "max message size" in str(exc):
        storage.small_batches = True  # every stream opened from now on
        raise BatchTooLarge() from exc
    _raise_api_error(exc)


SMALL_BATCH = 3  # changes per reply: 3 of the largest (two 5 MiB entities each) stay < 48 MB


@asynccontextmanager
async def change_stream(
    storage: Storage,
    pipeline: list[Document],
    resume_after: Document | None = None,
    max_await_ms: int | None = None,
    start_at: Timestamp | None = None,
    batch_size: int | None = None,
) -> AsyncIterator[ChangeStream]:
    """A database-wide change stream with pre-images where the collection keeps them (see
    ``ChangeStream``).

    Raises Invalid for a malformed resume token, ResumeExpired when the database no longer
    holds the history after it, and the usual translations otherwise."""
    try:
        stream = await storage.entity_db.watch(
            pipeline,
            resume_after=resume_after,
            start_at_operation_time=start_at,
            full_document_before_change="whenAvailable",
            max_await_time_ms=max_await_ms,
            batch_size=SMALL_BATCH if storage.small_batches else batch_size,
        )
    except OperationFailure as exc:
        if exc.code in _BAD_TOKEN and resume_after is not None:
            raise Invalid("resume", "not a valid resume token") from exc
        _raise_api_error(exc)
        raise  # pragma: no cover - _raise_api_error always raises
    except ProtocolError as exc:  # the first reply already
        _too_large(storage, exc)
        raise  # pragma: no cover
    except PyMongoError as exc:
        _raise_api_error(exc)
        raise  # pragma: no cover
    try:
        async with translated_async():
            yield ChangeStream(storage, stream)
    finally:
        await stream.close()
