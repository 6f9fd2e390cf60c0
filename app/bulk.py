"""``POST /:store/_bulk``: up to 1000 creates, patches, access changes and deletes in one
request. Each operation obeys its single-entity endpoint's rules (the same ``Entities``
methods, access checks, definitions and revisions) and makes the same realtime event; runs
of creates are written in one database write."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from app import validation
from app.acl import HIDDEN, Principal, revision_of
from app.audit import Audit
from app.entities import Entities
from app.errors import APIError, BadRequest, Invalid
from app.history import History

MAX_OPERATIONS = 1000
_OPS = {"create": ("entity",), "patch": ("id", "changes", "ifMatch"),
        "access": ("id", "changes", "ifMatch"), "delete": ("id", "ifMatch")}  # fmt: skip


def _shown(entity: dict[str, Any]) -> tuple[dict[str, Any], int]:
    shown = {k: v for k, v in entity.items() if k not in HIDDEN}
    return shown, revision_of(entity)


def _failed(error: APIError, entity_id: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = {"status": error.status, "error": error.body()}
    if entity_id is not None:
        result["id"] = str(entity_id)
    return result


def parse(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    for key in body:
        if key not in ("operations", "ordered"):
            raise Invalid(key, "is not a bulk option (operations, ordered)")
    operations = body.get("operations")
    if not isinstance(operations, list) or not operations:
        raise Invalid("operations", "must be a non-empty array")
    if len(operations) > MAX_OPERATIONS:
        raise Invalid("operations", f"at most {MAX_OPERATIONS} per request")
    ordered = body.get("ordered", True)
    if not isinstance(ordered, bool):
        raise Invalid("ordered", "must be true or false")
    return operations, ordered


class Bulk:
    def __init__(self, entities: Entities, history: History, audit: Audit):
        self.entities = entities
        self.history = history
        self.audit = audit

    async def run(self, store: str, body: dict[str, Any], user: Principal) -> dict[str, Any]:
        operations, ordered = parse(body)
        results: list[dict[str, Any] | None] = [None] * len(operations)
        index = 0
        stopped = False
        while index < len(operations) and not stopped:
            if _op(operations[index]) == "create":
                end = index
                while end < len(operations) and _op(operations[end]) == "create":
                    end += 1
                stopped = await self._creates(store, operations, index, end, user, ordered, results)
                index = end
            else:
                results[index] = await self._one(store, operations[index], index, user)
                stopped = ordered and results[index]["status"] >= 400  # type: ignore[index]
                index += 1
        done = [r if r is not None else {"status": None, "attempted": False} for r in results]
        success = all(r["status"] is not None and r["status"] < 400 for r in done)
        return {"success": success, "results": done}

    async def _creates(
        self,
        store: str,
        operations: list[Any],
        start: int,
        end: int,
        user: Principal,
        ordered: bool,
        results: list[dict[str, Any] | None],
    ) -> bool:
        """Check a run of creates, then write the valid ones at once; True to stop here."""
        prepared: list[dict[str, Any]] = []
        positions: list[int] = []
        refused_at: int | None = None
        for index in range(start, end):
            try:
                operation = _checked(operations[index], index)
                entity = operation.get("entity")
                if not isinstance(entity, dict):
                    raise Invalid(f"operations.{index}.entity", "must be a JSON object")
                prepared.append(self.entities.new_entity(store, entity, user))
                positions.append(index)
            except APIError as error:
                results[index] = _failed(error)
                if ordered:
                    refused_at = index
                    break
        outcome = await self.entities.create_many(store, prepared, ordered)
        for index, made in zip(positions, outcome, strict=False):
            if isinstance(made, APIError):
                results[index] = _failed(made)
                refused_at = index if refused_at is None else min(refused_at, index)
            else:
                entity, revision = _shown(made)
                results[index] = {"status": 201, "id": str(entity["_id"]), "rev": revision,
                                  "entity": entity}  # fmt: skip
        # Ordered: the database stopped at the first refusal; nothing after it was written.
        return ordered and refused_at is not None

    async def _one(self, store: str, operation: Any, index: int, user: Principal) -> dict[str, Any]:
        entity_id: ObjectId | None = None
        try:
            checked = _checked(operation, index)
            raw_id = checked.get("id")
            if not isinstance(raw_id, str):
                raise Invalid(f"operations.{index}.id", "must be the entity's id")
            entity_id = validation.object_id(raw_id, f"operations.{index}.id")
            if_match = checked.get("ifMatch")
            if if_match is not None and not (
                if_match == "*" or (isinstance(if_match, str) and validation.revision(if_match))
            ):
                raise Invalid(f"operations.{index}.ifMatch", 'a revision ("3") or "*"')
            op = checked["op"]
            if op == "delete":
                last = await self.entities.delete(store, entity_id, user, if_match)
                await self.history.deleted(store, entity_id, last, user.user_id)
                await self.audit.record(
                    "entity-deleted", user.user_id, store=store, entity=str(entity_id)
                )
                return {"status": 200, "id": str(entity_id)}
            changes = checked.get("changes")
            if not isinstance(changes, dict):
                raise Invalid(f"operations.{index}.changes", "must be a JSON object")
            if op == "patch":
                updated = await self.entities.patch(store, entity_id, changes, user, if_match)
            else:
                updated = await self.entities.set_access(store, entity_id, changes, user, if_match)
                await self.audit.record(
                    "access-changed", user.user_id, store=store, entity=str(entity_id),
                    changes=changes,
                )  # fmt: skip
            entity, revision = _shown(updated)
            return {"status": 200, "id": str(entity_id), "rev": revision, "entity": entity}
        except APIError as error:
            return _failed(error, entity_id)


def _op(operation: Any) -> Any:
    return operation.get("op") if isinstance(operation, dict) else None


def _checked(operation: Any, index: int) -> dict[str, Any]:
    where = f"operations.{index}"
    if not isinstance(operation, dict):
        raise BadRequest(f"{where} must be an object")
    op = operation.get("op")
    if op not in _OPS:
        raise Invalid(f"{where}.op", "must be create, patch, access or delete")
    for key in operation:
        if key != "op" and key not in _OPS[op]:
            raise Invalid(f"{where}.{key}", f"is not part of a {op} operation")
    return operation
