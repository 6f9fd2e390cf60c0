"""Store definitions: what a store holds (a JSON Schema of the entity's own fields, unique
fields, indexes), kept in the ``_stores`` collection and enforced on every write.

Each server process holds every definition compiled in memory (``Definitions.get`` costs no
database call) and polls ``_stores`` for versions changed by other processes, so a change
made anywhere is in force everywhere within about ``DEFINITIONS_POLL_MS``. A deleted
definition leaves a tombstone with the next version number, so versions of a store never
repeat and every process sees the deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pymongo.errors import DuplicateKeyError

from app import validation
from app.acl import READERS
from app.clock import now
from app.errors import Conflict, Invalid, NotFound
from app.schemas import SERVER_FIELDS, Schema, Violation, invalid, json_form, own_fields
from app.storage import (
    DEFINITIONS,
    INDEX_PREFIX,
    UNIQUE_PREFIX,
    Document,
    Storage,
    outside_deadline,
    translated_async,
)

log = logging.getLogger(__name__)

MAX_TITLE = 200
MAX_DESCRIPTION = 4000
MAX_UNIQUE = 16
MAX_INDEXES = 16
MAX_INDEX_FIELDS = 8
DRY_RUN_EXAMPLES = 10
_MISSING = object()


@dataclass(frozen=True)
class Definition:
    name: str
    version: int
    title: str | None
    description: str | None
    schema: Schema
    unique: tuple[str, ...]
    indexes: tuple[tuple[tuple[str, int], ...], ...]
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "defined": True,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "schema": self.schema.raw,
            "unique": list(self.unique),
            "indexes": [{"fields": [list(key) for key in index]} for index in self.indexes],
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    def for_create(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The entity's own fields with defaults applied, checked against the schema."""
        filled = self.schema.with_defaults(fields)
        self.check(filled)
        return filled

    def check(self, fields: dict[str, Any]) -> None:
        found = self.schema.violations(fields) + self.unindexable(fields)
        if found:
            raise invalid(found)

    def unindexable(self, fields: dict[str, Any]) -> list[Violation]:
        return unindexable(self.indexes, fields)

    def check_patch(self, stored: Document, changes: dict[str, Any]) -> None:
        """Refuse ``changes`` (dotted paths of own fields) unless the entity they make is
        valid and leaves every read-only field as it was."""
        before = own_fields(json_form(stored))
        after = apply_changes(before, changes)
        changed = [
            ".".join(path)
            for path in self.schema.read_only
            if _at(before, path) != _at(after, path)
        ]
        if changed:
            found = [Violation(path, "readOnly", "is read-only") for path in changed]
            raise Invalid(changed[0], "is read-only", errors=[v.public() for v in found])
        self.check(after)


def index_name(keys: tuple[tuple[str, int], ...]) -> str:
    return INDEX_PREFIX + ",".join(f"{path}:{direction}" for path, direction in keys)


def apply_changes(fields: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``fields`` (JSON values) after a PATCH's ``$set`` of dotted paths, as MongoDB would
    apply it; a path through a value that is not an object or array -> 400. ``fields`` is
    left as it was: only the containers on the changed paths are copied (however deep the
    rest of a stored entity is nested)."""
    result = dict(fields)
    copied = {id(result)}

    def writable(child: Any) -> Any:
        if isinstance(child, (dict, list)) and id(child) not in copied:
            child = dict(child) if isinstance(child, dict) else list(child)
            copied.add(id(child))
        return child

    for key, item in changes.items():
        segments = key.split(".")
        target: Any = result
        for depth, segment in enumerate(segments):
            last = depth == len(segments) - 1
            if isinstance(target, dict):
                if last:
                    target[segment] = item
                    break
                child = writable(target.get(segment, {}))
                target[segment] = child
                target = child
            elif isinstance(target, list) and validation.digits(segment):
                index = int(segment)
                if index >= len(target):
                    target.extend([None] * (index + 1 - len(target)))
                if last:
                    target[index] = item
                    break
                child = writable({} if target[index] is None else target[index])
                target[index] = child
                target = child
            else:
                raise Invalid(key, "the change cannot be applied to the stored entity")
    return result


def _at(fields: Any, path: tuple[str, ...]) -> Any:
    for segment in path:
        if not isinstance(fields, dict) or segment not in fields:
            return _MISSING
        fields = fields[segment]
    return fields


@dataclass(frozen=True)
class _Parsed:
    title: str | None
    description: str | None
    schema: Schema
    unique: tuple[str, ...]
    indexes: tuple[tuple[tuple[str, int], ...], ...]


def parse(body: dict[str, Any]) -> _Parsed:
    """A definition from a PUT body; 400 INVALID saying what is wrong."""
    for key in body:
        if key not in ("title", "description", "schema", "unique", "indexes"):
            raise Invalid(key, "is not part of a definition")
    if "schema" not in body:
        raise Invalid("schema", "is required")
    title = _text(body.get("title"), "title", MAX_TITLE)
    description = _text(body.get("description"), "description", MAX_DESCRIPTION)
    schema = Schema(body["schema"])
    unique = body.get("unique", [])
    if not isinstance(unique, list) or len(unique) > MAX_UNIQUE:
        raise Invalid("unique", f"must be a list of at most {MAX_UNIQUE} field paths")
    unique_paths = tuple(dict.fromkeys(_field_path(p, f"unique.{i}") for i, p in enumerate(unique)))
    indexes = body.get("indexes", [])
    if not isinstance(indexes, list) or len(indexes) > MAX_INDEXES:
        raise Invalid("indexes", f"must be a list of at most {MAX_INDEXES} indexes")
    parsed_indexes = tuple(
        dict.fromkeys(_index(item, f"indexes.{i}") for i, item in enumerate(indexes))
    )
    return _Parsed(title, description, schema, unique_paths, parsed_indexes)


def unindexable(
    indexes: tuple[tuple[tuple[str, int], ...], ...], fields: Document
) -> list[Violation]:
    """Indexed fields that hold an array. An index of the definition also holds the read
    rule's ``_readers`` (an array), and MongoDB cannot index two arrays of one entity
    together, so the server refuses such a write on every database alike."""
    found = []
    for index in indexes:
        for path, _ in index:
            value: Any = fields
            for segment in path.split("."):
                value = value.get(segment) if isinstance(value, dict) else None
                if isinstance(value, list):
                    message = "is indexed (store definition indexes) and cannot hold an array"
                    found.append(Violation(path, "indexed", message))
                    break
    return found


def _text(value: Any, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise Invalid(field, f"must be text of at most {limit} characters")
    return value


def _field_path(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise Invalid(where, "must be a field path")
    segments = validation.path(value)
    if segments[0] in SERVER_FIELDS or segments[0].startswith("_"):
        raise Invalid(where, f"{value!r} is a server field")
    for segment in segments:
        if validation.digits(segment):
            raise Invalid(where, f"{value!r}: index a field, not an array position")
    return value


def _index(item: Any, where: str) -> tuple[tuple[str, int], ...]:
    fields = item.get("fields") if isinstance(item, dict) else None
    if not isinstance(item, dict) or set(item) != {"fields"} or not isinstance(fields, list):
        raise Invalid(where, 'must be {"fields": [["path", 1 or -1], ...]}')
    if not 1 <= len(fields) <= MAX_INDEX_FIELDS:
        raise Invalid(f"{where}.fields", f"must name 1 to {MAX_INDEX_FIELDS} fields")
    keys: list[tuple[str, int]] = []
    for i, key in enumerate(fields):
        if (
            not isinstance(key, list)
            or len(key) != 2
            or key[1] not in (1, -1)
            or isinstance(key[1], bool)
        ):
            raise Invalid(f"{where}.fields.{i}", 'must be ["path", 1] or ["path", -1]')
        keys.append((_field_path(key[0], f"{where}.fields.{i}"), key[1]))
    if len({path for path, _ in keys}) != len(keys):
        raise Invalid(f"{where}.fields", "names a field twice")
    return tuple(keys)


def _stored(name: str, parsed: _Parsed, version: int, created: Any, moment: Any) -> Document:
    # The schema is kept as JSON text: its keys ($defs, $ref, ...) are not field names
    # every MongoDB accepts.
    return {
        "_id": name,
        "version": version,
        "title": parsed.title,
        "description": parsed.description,
        "schemaJson": orjson.dumps(parsed.schema.raw).decode(),
        "unique": list(parsed.unique),
        "indexes": [[list(key) for key in index] for index in parsed.indexes],
        "createdAt": created,
        "updatedAt": moment,
    }


def _definition(document: Document) -> Definition | None:
    """The compiled definition a ``_stores`` document holds (None for a tombstone)."""
    raw = document.get("schemaJson")
    if not isinstance(raw, str):
        return None
    indexes = tuple(
        tuple((str(path), int(direction)) for path, direction in index)
        for index in document.get("indexes") or []
    )
    return Definition(
        name=document["_id"],
        version=int(document["version"]),
        title=document.get("title"),
        description=document.get("description"),
        schema=Schema(orjson.loads(raw)),
        unique=tuple(document.get("unique") or ()),
        indexes=indexes,
        created_at=document["createdAt"],
        updated_at=document["updatedAt"],
    )


class Definitions:
    def __init__(self, storage: Storage, poll_s: float = 1.0):
        self.storage = storage
        self.poll_s = poll_s
        self._cache: dict[str, Definition] = {}
        self._versions: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None
        self.generation = 0  # bumped whenever any definition changes (the OpenAPI cache key)

    def get(self, store: str) -> Definition | None:
        return self._cache.get(store)

    def all(self) -> list[Definition]:
        return sorted(self._cache.values(), key=lambda d: d.name)

    async def start(self) -> None:
        await self.refresh()
        self._poller = asyncio.create_task(self._poll(), name="definitions-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.refresh()
            except Exception as exc:  # the next poll tries again; requests keep the cache
                log.warning("could not refresh store definitions: %r", exc)

    async def refresh(self) -> None:
        """Load every definition whose version changed since the last look."""
        collection = self.storage.system(DEFINITIONS)
        async with translated_async():
            versions = {
                doc["_id"]: doc.get("version") async for doc in collection.find({}, {"version": 1})
            }
            changed = [name for name, v in versions.items() if self._versions.get(name) != v]
            documents = (
                await collection.find({"_id": {"$in": changed}}).to_list() if changed else []
            )
        for document in documents:
            self._install(document)
        for name in set(self._versions) - set(versions):  # removed by hand
            self._versions.pop(name, None)
            if self._cache.pop(name, None) is not None:
                self.generation += 1

    def _install(self, document: Document) -> None:
        name = document["_id"]
        previous = self._versions.get(name)
        try:
            definition = _definition(document)
        except (Invalid, KeyError, TypeError, ValueError) as exc:
            log.error("store %s: its stored definition cannot be used: %r", name, exc)
            definition = None
        if definition is None:
            self._cache.pop(name, None)
            if document.get("dropped") and previous is not None:
                self.storage.forget_store(name)
        else:
            self._cache[name] = definition
        self._versions[name] = document.get("version")  # type: ignore[assignment]
        self.generation += 1

    async def put(self, store: str, body: dict[str, Any]) -> dict[str, Any]:
        parsed = parse(body)
        collection = self.storage.system(DEFINITIONS)
        async with translated_async():
            current = await collection.find_one({"_id": store})
        await self.storage.prepare_store(store)
        # Unique indexes first: if the store already holds duplicates the build fails with 409
        # naming the field, and the old definition stays in force.
        existing = await self.storage.defined_indexes(store)
        wanted = self._wanted_indexes(parsed)
        await outside_deadline(self._create_indexes(store, parsed, existing))
        moment = now()
        live = current is not None and isinstance(current.get("schemaJson"), str)
        created = current["createdAt"] if live and current else moment
        version = int(current.get("version", 0)) + 1 if current else 1
        document = _stored(store, parsed, version, created, moment)
        async with translated_async():
            try:
                if current is None:
                    await collection.insert_one(document)
                    replaced = True
                else:
                    result = await collection.replace_one(
                        {"_id": store, "version": {"$eq": current.get("version")}}, document
                    )
                    replaced = result.matched_count == 1
            except DuplicateKeyError:
                replaced = False
        if not replaced:
            raise Conflict(f"The definition of {store} changed meanwhile; try again")
        for index in set(existing) - wanted:
            await self.storage.drop_index(store, index)
        self._install(document)
        definition = self._cache[store]
        return definition.public()

    @staticmethod
    def _wanted_indexes(parsed: _Parsed) -> set[str]:
        return {UNIQUE_PREFIX + path for path in parsed.unique} | {
            index_name(keys) for keys in parsed.indexes
        }

    async def _create_indexes(
        self, store: str, parsed: _Parsed, existing: dict[str, Document]
    ) -> None:
        for path in parsed.unique:
            if UNIQUE_PREFIX + path not in existing:
                await self.storage.create_unique(store, path)
        for keys in parsed.indexes:
            name = index_name(keys)
            if name not in existing:
                # With the read rule's key last: a user's filter on these fields is served by
                # the index together with the read rule.
                await self.storage.create_plain_index(store, name, [*keys, (READERS, 1)])

    async def dry_run(self, store: str, body: dict[str, Any]) -> dict[str, Any]:
        """How many existing entities ``body``'s definition would reject, and up to
        DRY_RUN_EXAMPLES of them with their errors. Nothing is changed."""
        parsed = parse(body)
        return await outside_deadline(self._dry_run(store, parsed))

    async def _dry_run(self, store: str, parsed: _Parsed) -> dict[str, Any]:
        checked = rejected = 0
        examples: list[dict[str, Any]] = []
        async with translated_async():
            async for document in self.storage.store(store).find({}, batch_size=1000):
                checked += 1
                try:
                    own = own_fields(json_form(document))
                    found = parsed.schema.violations(own) + unindexable(parsed.indexes, own)
                except Invalid as exc:
                    found = [Violation("", "depth", exc.message)]
                if found:
                    rejected += 1
                    if len(examples) < DRY_RUN_EXAMPLES:
                        errors = [v.public() for v in found]
                        examples.append({"id": str(document["_id"]), "errors": errors})
            duplicates = {path: await self._duplicates(store, path) for path in parsed.unique}
        return {
            "dryRun": True,
            "name": store,
            "checked": checked,
            "rejected": rejected,
            "examples": examples,
            "duplicates": {path: n for path, n in duplicates.items() if n},
        }

    async def _duplicates(self, store: str, path: str) -> int:
        """How many values of ``path`` more than one entity holds (a unique index on it
        would fail to build)."""
        pipeline: list[Document] = [
            {"$match": {path: {"$exists": True}}},
            {"$group": {"_id": f"${path}", "n": {"$sum": 1}}},
            {"$match": {"n": {"$gt": 1}}},
            {"$count": "values"},
        ]
        found = await (await self.storage.store(store).aggregate(pipeline)).to_list()
        return int(found[0]["values"]) if found else 0

    async def remove(self, store: str, drop: bool) -> None:
        collection = self.storage.system(DEFINITIONS)
        async with translated_async():
            current = await collection.find_one({"_id": store})
        defined = current is not None and isinstance(current.get("schemaJson"), str)
        if not defined and not (drop and await self.storage.store_exists(store)):
            raise NotFound(f"Store {store} has no definition")
        version = int(current.get("version", 0)) + 1 if current else 1
        tombstone = {
            "_id": store,
            "version": version,
            "dropped": drop,
            "updatedAt": now(),
        }
        async with translated_async():
            await collection.replace_one({"_id": store}, tombstone, upsert=True)
        if drop:
            await outside_deadline(self.storage.drop_store(store))
        else:
            for index in await self.storage.defined_indexes(store):
                await self.storage.drop_index(store, index)
        self._install(tombstone)

    async def describe(self, store: str) -> dict[str, Any]:
        """The definition of ``store`` as stored now (not the cache); a store without one
        that exists -> ``{"name", "defined": false}``; neither -> 404."""
        async with translated_async():
            document = await self.storage.system(DEFINITIONS).find_one({"_id": store})
        definition = _definition(document) if document is not None else None
        if definition is not None:
            return definition.public()
        if await self.storage.store_exists(store):
            return {"name": store, "defined": False}
        raise NotFound(f"No store {store}")

    async def catalogue(self, admin: bool) -> list[dict[str, Any]]:
        async with translated_async():
            documents = await self.storage.system(DEFINITIONS).find({}).to_list()
        defined = {d["_id"]: d for d in documents if isinstance(d.get("schemaJson"), str)}
        names = sorted(set(defined) | set(await self.storage.store_names()))
        listed: list[dict[str, Any]] = []
        for name in names:
            document = defined.get(name)
            entry: dict[str, Any] = {
                "name": name,
                "title": document.get("title") if document else None,
                "description": document.get("description") if document else None,
                "defined": document is not None,
                "version": document.get("version") if document else None,
            }
            if admin:
                entry["count"] = await self.storage.estimated_count(name)
            listed.append(entry)
        return listed
