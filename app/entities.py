"""Entity operations on stores, with the access rules applied inside every query.

The only module that reads or writes store collections for the API; REST handlers, the
realtime layer and future admin views call it.
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from bson import ObjectId, decode_all
from bson import encode as bson_encode
from bson.datetime_ms import DatetimeMS
from pymongo import DESCENDING
from pymongo.errors import BulkWriteError

from app import acl, validation
from app.acl import AUTHOR, HIDDEN, READERS, REVISION, Principal
from app.clock import now, parse_time
from app.definitions import Definitions
from app.errors import (
    APIError,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    QueryTimeout,
    TooLarge,
)
from app.jsonio import ms
from app.nonces import Nonces
from app.query import ListQuery, Only, Resume, projection, sort_value
from app.rawbatches import RawBatches
from app.realtime.changes import apply_update
from app.storage import ENTITY_CODEC, Document, Storage, translated_async, write_error

SERVER_FIELDS = ("_id", "owner", "createdAt", "updatedAt")
PATCH_PROTECTED = ("_id", "owner", "group", "access", "branch", "createdAt", "updatedAt")
# A page is held while it is read, to learn whether another follows: whole up to WHOLE_PAGE
# entities, and larger ones up to HOLD_BYTES of BSON. A page that turns out larger than that is
# read again, streamed in batches of BATCH. Batches are of whole entities (a database reply,
# and the copies the driver makes of it, grow with them) or of PROJECTED_BATCH entities cut
# down to the fields ``only`` names, so a 10,000-entity page of a few fields takes four.
WHOLE_PAGE = 1000
HOLD_BYTES = 1 << 20
PROJECTED_BATCH = 2500
PIECE = 500  # entities decoded, and handed on, together
BATCH = 1000
_RETRIES = 3


@dataclass
class Page:
    """One list page: its documents, streamed a slice at a time, and, when the page is full
    and more follow, where the next one starts."""

    slices: AsyncIterator[list[Document]]
    last: Resume | None


class Entities:
    def __init__(
        self,
        storage: Storage,
        user_exists: Callable[[str], Awaitable[bool]],
        definitions: Definitions,
        query_timeout_ms: int = 15000,
        max_entity_bytes: int = 4 * 1024 * 1024,
    ):
        self.storage = storage
        self.user_exists = user_exists
        self.definitions = definitions
        self.query_timeout_ms = query_timeout_ms
        self.max_entity_bytes = max_entity_bytes

    async def create(self, store: str, body: dict[str, Any], user: Principal) -> Document:
        stored = self.new_entity(store, body, user)
        await self.storage.prepare_store(store)
        async with translated_async():
            await self.storage.insert(store, stored)
        return _as_created(stored)

    async def create_many(
        self, store: str, prepared: list[Document], ordered: bool
    ) -> list[Document | APIError]:
        """Insert entities from ``new_entity`` in one database write; per entity, what it
        became or why it was refused. ``ordered`` stops at the first refusal (those after it
        are left out of the answer)."""
        if not prepared:
            return []
        await self.storage.prepare_store(store)
        refused: dict[int, APIError] = {}
        async with translated_async():
            try:
                await self.storage.store(store).insert_many(prepared, ordered=ordered)
            except BulkWriteError as exc:  # per entity; anything else fails the whole request
                for error in exc.details.get("writeErrors", []):
                    refused[int(error["index"])] = write_error(error)
        outcome: list[Document | APIError] = []
        for index, stored in enumerate(prepared):
            if index in refused:
                outcome.append(refused[index])
                if ordered:
                    break
            else:
                outcome.append(_as_created(stored))
        return outcome

    def new_entity(self, store: str, body: dict[str, Any], user: Principal) -> Document:
        """The document a create stores, checked as POST checks it (400 otherwise)."""
        for name in (*SERVER_FIELDS, *sorted(HIDDEN)):
            if name in body:
                raise Invalid(name, "is set by the server")
        fields = dict(body)
        group = fields.pop("group", user.primary_group)
        if group is not None:
            self._check_group(group, user)
        access = validation.string_list(fields.pop("access", []), "access")
        branch = validation.string_list(fields.pop("branch", []), "branch")
        validation.document(fields)
        definition = self.definitions.get(store)
        if definition is not None:
            fields = definition.for_create(fields)
            validation.document(fields)  # defaults included
        moment = now()
        entity: Document = {
            "_id": ObjectId(),
            **fields,
            "owner": user.user_id,
            "group": group,
            "access": access,
            "branch": branch,
            "createdAt": moment,
            "updatedAt": moment,
        }
        stored = {
            **entity,
            READERS: acl.readers_of(user.user_id, group, access, branch),
            REVISION: 1,
            AUTHOR: _stamp(user),
        }
        self._size_of(stored)
        return stored

    async def get(
        self, store: str, entity_id: ObjectId, user: Principal, only: Only | None = None
    ) -> Document:
        if only is None:
            found = await self._readable(store, entity_id, user)
        else:
            shown = projection(only) or {}
            if not only.exclude:
                shown[REVISION] = 1  # for the ETag
            async with translated_async():
                projected = await self.storage.store(store).find_one(
                    {"_id": entity_id, **acl.read_filter(user)}, shown
                )
            if projected is None:
                raise _not_found(store, entity_id)
            found = projected
        _hide_but_revision(found)
        return found

    async def list(self, store: str, query: ListQuery, user: Principal) -> Page:
        """The page ``query`` selects; raises before anything is streamed if the database
        cannot answer."""
        if query.limit == 0:
            return Page(_empty(), None)
        async with self._bounded_query():
            return await self._list(store, query, user)

    async def _list(self, store: str, query: ListQuery, user: Principal) -> Page:
        collection = self.storage.store(store)
        selected = {**acl.read_filter(user), **query.bounds()}
        hides = _may_hold_hidden(query)
        # One query: the page and one entity more, which tells whether another page follows
        # (the Link header, sent before the body). Held while it is read; past WHOLE_PAGE
        # entities only up to HOLD_BYTES of BSON, and a page that turns out larger is read
        # again, streamed (below).
        wanted = query.limit + 1
        if query.limit <= WHOLE_PAGE:
            batch = wanted  # one round trip
        else:
            batch = _even_batches(query.limit, BATCH if hides else PROJECTED_BATCH)
        cursor = (
            RawBatches(collection, selected, query.projection(), batch_size=batch)
            .sort(query.order())
            .skip(query.offset)
            .limit(wanted)
        )
        bound = HOLD_BYTES if query.limit > WHOLE_PAGE else None
        held = await _read_whole(cursor, wanted, bound)
        if held is None:
            return await self._streamed(store, query, selected, hides)
        return await self._held(store, query, held[0], held[1], hides)

    async def _held(
        self,
        store: str,
        query: ListQuery,
        pieces: builtins.list[memoryview],
        count: int,
        hides: bool,
    ) -> Page:
        """The page read whole, as ``count`` entities in BSON ``pieces``: one more than the
        page holds says that another page follows, from the page's own last entity."""
        if count <= query.limit:
            return Page(_decoded(pieces, [], hides), None)
        tail = decode_all(pieces.pop(), ENTITY_CODEC)[:-1]  # the extra one goes
        if not tail:  # it came alone: the page's last entity ends the piece before
            tail = decode_all(pieces.pop(), ENTITY_CODEC)
        last = await self._resume_at(store, query, tail[-1])
        return Page(_decoded(pieces, tail, hides), last)

    async def _streamed(
        self, store: str, query: ListQuery, selected: dict[str, Any], hides: bool
    ) -> Page:
        """A page larger than HOLD_BYTES, streamed in batches and never held whole. A first
        small query finds where the page ends and whether anything follows it."""
        collection = self.storage.store(store)
        order = query.order()
        sorted_by = [path for path, _ in query.sort.total] if query.sort else ["_id"]
        async with translated_async():
            edge = (
                await collection.find(selected, dict.fromkeys(sorted_by, 1))
                .sort(order)
                .skip(query.offset + query.limit - 1)
                .limit(2)
                .to_list()
            )
        last = None
        limit: int | None = query.limit
        if edge:
            end = await self._resume_at(store, query, edge[0])
            if query.sort is None:
                # As "not after the edge", not "up to it": the database compares ids of one
                # type only, and ids of other types (written elsewhere) belong to the page.
                cap = {"$nor": [{"_id": {"$gt": end.id}}]}
                selected["$and"] = [*selected.get("$and", []), cap]
            elif isinstance(end.id, ObjectId):  # another id type has no key to bound by
                # Up to the edge entity in the sort order: what is created inside the page
                # meanwhile makes it longer, never pushes the edge out of both pages.
                beyond = query.sort.after(end.values, end.id)
                selected["$and"] = [*selected.get("$and", []), {"$nor": [beyond]}]
                limit = None
            if len(edge) == 2:
                last = end
        cursor = (
            collection.find(selected, query.projection(), batch_size=BATCH)
            .sort(order)
            .skip(query.offset)
        )
        if limit is not None:
            cursor = cursor.limit(limit)
        # The first batch is fetched before anything is sent, so a query the database refuses
        # is answered with an error envelope rather than a cut-off body.
        async with translated_async():
            try:
                first: Document | None = await cursor.next()
            except StopAsyncIteration:
                first = None
        return Page(_stream(cursor, first, hides), last)

    async def _resume_at(self, store: str, query: ListQuery, document: Document) -> Resume:
        """Where the next page starts: after ``document`` (its sort values and id)."""
        if query.sort is None:
            return Resume((), document["_id"])
        paths = [path for path, _ in query.sort.keys]
        if query.only is not None:
            # The page's projection may have left sort fields out: read them by id.
            async with translated_async():
                found = await self.storage.store(store).find_one(
                    {"_id": document["_id"]}, dict.fromkeys(paths, 1)
                )
            document = found or document
        return Resume(tuple(sort_value(document, path) for path in paths), document["_id"])

    async def meta(self, store: str, query: ListQuery, user: Principal) -> dict[str, Any]:
        collection = self.storage.store(store)
        selected = {**acl.read_filter(user), **query.bounds()}
        shown = query.projection()
        reverse = query.sort.reversed() if query.sort else [("_id", DESCENDING)]
        async with self._bounded_query(), translated_async():
            count = await collection.count_documents(selected)
            first = await collection.find_one(selected, shown, sort=query.order())
            last = await collection.find_one(selected, shown, sort=reverse)
        for found in (first, last):
            if found is not None:
                _hide(found)
        return {"count": count, "first": first, "last": last}

    @asynccontextmanager
    async def _bounded_query(self) -> AsyncIterator[None]:
        """Lists and ``meta`` run under QUERY_TIMEOUT_MS; running past it is a 504 that says
        how to make the query cheaper (retrying the same query would not help)."""
        try:
            yield
        except DeadlineExceeded:
            raise QueryTimeout(
                f"The query did not finish within {self.query_timeout_ms} ms "
                "(QUERY_TIMEOUT_MS): narrow the filter or the from/to range, or index the "
                "fields it filters and sorts on (the store definition's indexes)"
            ) from None

    async def patch(
        self,
        store: str,
        entity_id: ObjectId,
        body: dict[str, Any],
        user: Principal,
        if_match: str | None = None,
    ) -> Document:
        changes: dict[str, Any] = {}
        expected: dict[str, Any] = {}
        for key, item in body.items():
            segments = validation.path(key)
            head = segments[0]
            if head in HIDDEN:
                raise Invalid(key, "is not a field")
            if head in PATCH_PROTECTED:
                if len(segments) > 1:
                    raise Invalid(key, "cannot be changed with PATCH")
                expected[head] = _comparable(head, item, entity_id)
                continue
            validation.value_at(segments, item, key)
            changes[key] = item
        validation.no_overlap(list(changes), "body")
        for attempt in range(_RETRIES):
            current = await self._writable(store, entity_id, user)
            for key in changes:
                validation.positions(current, key.split("."), key)
            for name, item in expected.items():
                if name != "_id" and not _same(current.get(name), item):
                    raise Invalid(name, "cannot be changed with PATCH")
            guarded = [n for n in expected if n != "_id"]
            if _precondition(current, if_match):
                guarded.append(REVISION)
            definition = self.definitions.get(store)
            if definition is not None:
                # Checked on the entity as it will be, and written only if no other write
                # came between (its revision is unchanged): what is stored stays valid.
                definition.check_patch(current, changes)
                guarded.append(REVISION)
            fields = {**changes, "updatedAt": now(), AUTHOR: _stamp(user)}
            # The write applies only while the entity is as checked: the access state that
            # allowed it, and the protected values sent back (``$eq``: data, never operators).
            updated = await self._change(store, entity_id, current, fields, guarded, attempt)
            if updated is not None:
                return updated
        raise Conflict("The entity kept changing; try again")

    async def set_access(
        self,
        store: str,
        entity_id: ObjectId,
        body: dict[str, Any],
        user: Principal,
        if_match: str | None = None,
    ) -> Document:
        for key in body:
            if key not in acl.ACCESS_FIELDS:
                raise Invalid(key, "only owner, group, access and branch are set here")
        wanted: dict[str, Any] = {}
        if "owner" in body:
            owner = body["owner"]
            if not isinstance(owner, str) or not await self.user_exists(owner):
                raise Invalid("owner", "must be the id of an existing user")
            wanted["owner"] = owner
        if "group" in body:
            if body["group"] is not None and not isinstance(body["group"], str):
                raise Invalid("group", "must be a group id or null")
            wanted["group"] = body["group"]
        for name in ("access", "branch"):
            if name in body:
                wanted[name] = validation.string_list(body[name], name)

        for attempt in range(_RETRIES):
            current = await self._readable(store, entity_id, user)
            if not user.admin:
                if current.get("owner") != user.user_id:
                    raise Forbidden()
                if wanted.get("owner", user.user_id) != user.user_id:
                    raise Forbidden("Only an admin can change the owner")
                group = wanted.get("group", current.get("group"))
                if group is not None and group != current.get("group"):
                    self._check_group(group, user)
            merged = {name: current.get(name) for name in acl.ACCESS_FIELDS} | wanted
            readers = acl.readers_of(
                merged["owner"], merged["group"], merged["access"] or [], merged["branch"] or []
            )
            fields = {**wanted, READERS: readers, "updatedAt": now(), AUTHOR: _stamp(user)}
            guarded = [*acl.ACCESS_FIELDS]
            if _precondition(current, if_match):
                guarded.append(REVISION)
            updated = await self._change(store, entity_id, current, fields, guarded, attempt)
            if updated is not None:
                return updated
        raise Conflict("The entity's access fields kept changing; try again")

    async def explain(
        self, store: str, entity_id: ObjectId, user: Principal, target: Principal
    ) -> dict[str, Any]:
        """Whether ``target`` may read and change the entity, and through which fields; for
        ``user``, who must be able to read it (the handler allows admins only)."""
        entity = await self._readable(store, entity_id, user)
        return {"user": target.user_id, "login": target.login, **acl.explain(target, entity)}

    async def delete(
        self, store: str, entity_id: ObjectId, user: Principal, if_match: str | None = None
    ) -> int:
        """Delete the entity; its last revision (for the history's delete entry)."""
        collection = self.storage.store(store)
        for _ in range(_RETRIES):
            current = await self._writable(store, entity_id, user)
            guard = (REVISION,) if _precondition(current, if_match) else ()
            async with translated_async():
                result = await collection.delete_one(_unchanged(entity_id, current, guard))
            if result.deleted_count == 1:
                return revision(current)
        raise Conflict("The entity kept changing; try again")

    def _size_of(self, document: Document) -> int:
        """The stored entity's size in BSON; 413 past ``max_entity_bytes``."""
        size = len(bson_encode(document))
        if size > self.max_entity_bytes:
            raise TooLarge(
                f"The entity would take {size} bytes; at most {self.max_entity_bytes} "
                "(MAX_ENTITY_BYTES)"
            )
        return size

    async def _change(
        self,
        store: str,
        entity_id: ObjectId,
        current: Document,
        fields: Document,
        guarded: builtins.list[str],
        attempt: int,
    ) -> Document | None:
        """``$set`` ``fields`` (and one revision more) on the entity while the fields the
        access rule reads and those ``guarded`` still hold their values in ``current``; the
        entity it leaves, or None when it had changed meanwhile (the caller reads it again).

        A write that makes the entity larger (413 past the limit) must apply to ``current``
        as read, its revision unchanged, or two writes checked against the same entity could
        grow it past the limit together. So does, on a first attempt, a write whose outcome
        ``_predictable`` can tell from ``current``: it then answers with that outcome (the
        entity exactly as this write left it) instead of reading the entity back, one
        database round trip fewer. When another write came in between, the attempts after it
        write without that guard and read the entity back, as any other write does (which
        may then show a later write too)."""
        after = apply_update(current, {"updatedFields": fields})
        if self._size_of(after) > len(bson_encode(current)):
            guarded.append(REVISION)
        exact = _predictable(current, fields) and (attempt == 0 or REVISION in guarded)
        if exact:
            guarded.append(REVISION)
        selector = _unchanged(entity_id, current, guarded)
        update = {"$set": fields, "$inc": {REVISION: 1}}
        async with translated_async():
            result = await self.storage.store(store).update_one(selector, update)
            if result.matched_count == 0:
                return None
            if exact:
                after[REVISION] = revision(current) + 1
                found: Document | None = after
            else:
                found = await self.storage.entity(store, entity_id)
        if found is not None:
            _hide_but_revision(found)
        return found

    async def _readable(self, store: str, entity_id: ObjectId, user: Principal) -> Document:
        """The entity if ``user`` may read it, else 404. Fetched by its id alone and checked
        on the fetched document: the same answer as the indexed read filter, from the one
        lookup every database serves best."""
        async with translated_async():
            found = await self.storage.entity(store, entity_id)
        if found is None or not acl.can_read(user, found):
            raise _not_found(store, entity_id)
        return found

    async def _writable(self, store: str, entity_id: ObjectId, user: Principal) -> Document:
        """The entity if ``user`` may change it; 404 if they cannot read it, 403 if they can
        read but not change it."""
        found = await self._readable(store, entity_id, user)
        if not acl.can_write(user, found):
            raise Forbidden()
        return found

    @staticmethod
    def _check_group(group: Any, user: Principal) -> None:
        if not isinstance(group, str) or not group:
            raise Invalid("group", "must be a non-empty group id")
        if not user.admin and group not in user.groups:
            raise Invalid("group", "you are not a member of this group")


def _unchanged(entity_id: ObjectId, current: Document, fields: Iterable[str]) -> Document:
    """A filter matching the entity only while ``fields`` and the fields the access rule reads
    still hold the values in ``current`` (compared with ``$eq``, as data)."""
    guarded = dict.fromkeys((READERS, "owner", "group", *fields))
    return {"_id": entity_id, **{name: {"$eq": current.get(name)} for name in guarded}}


def _predictable(current: Document, fields: Document) -> bool:
    """Whether ``$set`` of ``fields`` on ``current`` gives what ``apply_update`` computes: a
    revision that ``$inc`` adds one to as Python does (an integer, or none yet), and every
    path leading through objects only (a missing one is created as objects by both). A path
    through an array, or through a value that is neither, is left to the database (it pads
    arrays, or refuses the write)."""
    stored = current.get(REVISION)
    if stored is not None and (not isinstance(stored, int) or isinstance(stored, bool)):
        return False
    for path in fields:
        node: Any = current
        for segment in path.split(".")[:-1]:
            if segment not in node:
                break  # created from here on
            node = node[segment]
            if not isinstance(node, dict):
                return False
    return True


def _comparable(name: str, item: Any, entity_id: ObjectId) -> Any:
    """A protected field's value from a PATCH body, in the form it is stored in. Only plain
    values of the field's own type are accepted, so nothing sent here can act as an operator."""
    if name == "owner" and not isinstance(item, str):
        raise Invalid(name, "cannot be changed with PATCH (send the stored id or leave it out)")
    if name == "group" and item is not None and not isinstance(item, str):
        raise Invalid(name, "cannot be changed with PATCH (send the stored id or leave it out)")
    if name in ("access", "branch") and not (
        isinstance(item, list) and all(isinstance(x, str) for x in item)
    ):
        raise Invalid(name, "cannot be changed with PATCH (send the stored list or leave it out)")
    if name == "_id":
        if not isinstance(item, str) or item.lower() != str(entity_id):
            raise Invalid("_id", "cannot be changed with PATCH")
        return item
    if name in ("createdAt", "updatedAt"):
        if not isinstance(item, str):
            raise Invalid(name, "cannot be changed with PATCH")
        return parse_time(item, name)
    return item


def _same(stored: Any, given: Any) -> bool:
    if isinstance(stored, DatetimeMS) and isinstance(given, datetime):
        return int(stored) == ms(given)
    return bool(stored == given)


_nonces = Nonces(4, 1)


def _stamp(user: Principal) -> str:
    """A new ``_by`` value: the author, and a nonce so that every write changes it."""
    return f"{user.user_id}.{_nonces.next()}"


def _as_created(stored: Document) -> Document:
    """A created entity as its creator sees it (the revision kept for the ETag)."""
    return {k: v for k, v in stored.items() if k == REVISION or k not in HIDDEN}


revision = acl.revision_of


def _precondition(current: Document, if_match: str | None) -> bool:
    """Check ``If-Match`` on the entity as read; True when the write must also be guarded by
    its revision (so it lands only if the entity is still at it, checked in the write)."""
    if if_match is None or if_match == "*":
        return False  # "*": it exists, which reading it showed
    if str(revision(current)) != if_match:
        shown = {k: v for k, v in current.items() if k not in HIDDEN}
        raise PreconditionFailed(
            f"The entity is at revision {revision(current)}, not {if_match}", current=shown
        )
    return True


def _hide_but_revision(document: Document) -> None:
    """One entity for a single-entity answer: hidden fields dropped, the revision kept (the
    handler turns it into the ETag)."""
    for name in HIDDEN:
        if name != REVISION:
            document.pop(name, None)


def _hide(document: Document) -> None:
    for name in HIDDEN:
        document.pop(name, None)


def _not_found(store: str, entity_id: ObjectId) -> NotFound:
    return NotFound(f"No entity {entity_id} in store {store}")


def _shown(documents: list[Document], hides: bool) -> list[Document]:
    if hides:
        for document in documents:
            _hide(document)
    return documents


async def _empty() -> AsyncIterator[list[Document]]:
    return
    yield  # pragma: no cover


def _even_batches(page: int, most: int) -> int:
    """A batch size that reads ``page`` entities and the one after them in as many round
    trips as batches of ``most`` would take for the page alone, none left nearly empty."""
    trips = -(-page // most)
    return -(-(page + 1) // trips)


def _may_hold_hidden(query: ListQuery) -> bool:
    """Whether the page's documents can carry hidden fields: not when ``only`` names the
    fields to read (it never names a hidden one)."""
    return query.only is None or query.only.exclude


_LENGTH = struct.Struct("<i")


async def _read_whole(
    cursor: Any, wanted: int, bound: int | None
) -> tuple[list[memoryview], int] | None:
    """The BSON a raw-batch ``cursor`` yields, held in pieces of up to PIECE entities, and
    how many entities it holds; None once more than ``bound`` bytes arrived before ``wanted``
    entities did (nothing is kept then)."""
    pieces: list[memoryview] = []
    count = size = 0
    async with translated_async():
        try:
            async for batch in cursor:
                raw = cast(bytes, batch)  # typed as documents, yields BSON bytes
                size += len(raw)
                count += _split(raw, pieces)
                if bound is not None and size > bound and count < wanted:
                    return None
        finally:
            await cursor.close()
    return pieces, count


def _split(raw: bytes, pieces: list[memoryview]) -> int:
    """Append the BSON documents in ``raw`` (each starts with its length) to ``pieces``, up
    to PIECE in each, without copying them; how many there were."""
    view = memoryview(raw)
    length = _LENGTH.unpack_from  # 10,000 turns of this loop per large page: kept lean
    count = offset = start = 0
    end = len(raw)
    cut = PIECE
    while offset < end:
        offset += length(raw, offset)[0]
        count += 1
        if count == cut:
            pieces.append(view[start:offset])
            start = offset
            cut += PIECE
    if start < end:
        pieces.append(view[start:end])
    return count


async def _decoded(
    pieces: list[memoryview], tail: list[Document], hides: bool
) -> AsyncIterator[list[Document]]:
    """The documents in BSON ``pieces``, one piece decoded at a time, then ``tail``."""
    pieces.reverse()
    while pieces:
        yield _shown(decode_all(pieces.pop(), ENTITY_CODEC), hides)
    if tail:
        yield _shown(tail, hides)


async def _stream(
    cursor: Any, first: Document | None, hides: bool
) -> AsyncIterator[list[Document]]:
    try:
        if first is None:
            return
        yield _shown([first], hides)
        while documents := await cursor.to_list(PIECE):
            yield _shown(documents, hides)
    finally:
        await cursor.close()
