"""The OpenAPI 3.1 document of the whole API, stores with definitions included.

The fixed part (auth, tokens, users, ``_me``, ``_stores``, the generic ``/{store}`` paths) is
built once; each defined store adds its own paths, whose bodies use the store's schema. The
document is rebuilt only when a definition changes (``Definitions.generation``).
"""

from __future__ import annotations

import copy
from typing import Any

from app.definitions import Definition, Definitions
from app.query import MAX_LIMIT
from app.validation import STORE_NAME

V1 = "/api/v1"
Json = dict[str, Any]

_ERROR_TEXT = {
    "400": "The request is malformed or a value is not allowed (BAD_REQUEST, INVALID)",
    "401": "Not signed in, or the credential has expired (UNAUTHORIZED)",
    "403": "Signed in, but not allowed (FORBIDDEN)",
    "404": "No such resource, or the caller may not read it (NOT_FOUND)",
    "408": "The body did not arrive within 30 s of the headers (REQUEST_TIMEOUT)",
    "409": "A unique value is taken, or the resource kept changing (CONFLICT)",
    "410": "The cursor is older than CHANGES_RETENTION_DAYS (RESUME_EXPIRED)",
    "412": "If-Match named another revision; the envelope's current is the entity now",
    "413": "The body is larger than MAX_BODY_BYTES, or the entity would be larger than "
    "MAX_ENTITY_BYTES (TOO_LARGE)",
    "422": "The Idempotency-Key was used for another request (IDEMPOTENCY_KEY_REUSED)",
    "415": "The body is not application/json (UNSUPPORTED_MEDIA_TYPE)",
    "429": "Too many failed sign-ins, or past RATE_LIMIT; wait Retry-After s (TOO_MANY_REQUESTS)",
    "504": "The query ran past QUERY_TIMEOUT_MS; narrow it or index its fields (QUERY_TIMEOUT)",
    "503": "Busy or the database is unavailable; retry after Retry-After (UNAVAILABLE)",
}
_READ_ERRORS = ("400", "401", "403", "404", "429", "503")
_WRITE_ERRORS = ("400", "401", "403", "404", "408", "409", "413", "415", "429", "503")


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str = "OK", headers: Json | None = None) -> Json:
    content = {"application/json": {"schema": schema}}
    response: Json = {"description": description, "content": content}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: str) -> Json:
    found: Json = {}
    for status in statuses:
        response = _json(_ref("Error"), _ERROR_TEXT[status])
        if status in ("429", "503"):
            response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        found[status] = response
    return found


def _body(schema: Json) -> Json:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _path_param(name: str, schema: Json, description: str) -> Json:
    found: Json = {"name": name, "in": "path", "required": True, "schema": schema}
    return {**found, "description": description}


ENTITY_ID: Json = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"}
_STRINGS: Json = {"type": "array", "items": {"type": "string"}}
_TIME: Json = {"type": "string", "format": "date-time"}
SERVER_PROPERTIES: Json = {
    "_id": {**ENTITY_ID, "readOnly": True},
    "owner": {"type": "string", "readOnly": True},
    "group": {"type": ["string", "null"]},
    "access": _STRINGS,
    "branch": _STRINGS,
    "createdAt": {**_TIME, "readOnly": True},
    "updatedAt": {**_TIME, "readOnly": True},
}
_ACCESS_INPUT: Json = {
    "group": {"type": ["string", "null"], "description": "A group the caller belongs to"},
    "access": {**_STRINGS, "maxItems": 1000},
    "branch": {**_STRINGS, "maxItems": 1000},
}

_ACCOUNT: Json = {
    "login": {"type": "string"},
    "name": {"type": "string"},
    "groups": _STRINGS,
    "branches": _STRINGS,
    "admin": {"type": "boolean"},
}

_COMPONENTS: Json = {
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "description": "A token from /auth/token"},
        "cookie": {"type": "apiKey", "in": "cookie", "name": "sid"},
    },
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["success", "code", "error", "message"],
            "properties": {
                "success": {"const": False},
                "code": {"type": "string", "description": "The HTTP status, as text"},
                "error": {"type": "string"},
                "message": {"type": "string"},
                "tags": _STRINGS,
                "requestId": {"type": "string"},
                "current": {"type": "object", "description": "412: the entity as it is now"},
                "errors": {
                    "type": "array",
                    "description": "Every violation of a store definition",
                    "items": {
                        "type": "object",
                        "required": ["field", "rule", "message"],
                        "properties": {
                            "field": {"type": "string"},
                            "rule": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Success": {
            "type": "object",
            "required": ["success"],
            "properties": {"success": {"const": True}, "sucess": {"const": True}},
        },
        "Entity": {
            "type": "object",
            "description": "An entity: the server's fields and any JSON fields of its own",
            "required": ["_id"],
            "properties": SERVER_PROPERTIES,
            "additionalProperties": True,
        },
        "EntityInput": {
            "type": "object",
            "description": "The entity's own fields, and optionally group, access and branch",
            "properties": _ACCESS_INPUT,
            "additionalProperties": True,
        },
        "Changes": {
            "type": "object",
            "description": "Fields to set; keys may be dotted paths (a.b.c)",
            "additionalProperties": True,
        },
        "AccessChanges": {
            "type": "object",
            "properties": {"owner": {"type": "string"}, **_ACCESS_INPUT},
            "additionalProperties": False,
        },
        "Meta": {
            "type": "object",
            "required": ["count", "first", "last"],
            "properties": {
                "count": {"type": "integer", "minimum": 0},
                "first": {"oneOf": [_ref("Entity"), {"type": "null"}]},
                "last": {"oneOf": [_ref("Entity"), {"type": "null"}]},
            },
        },
        "Explanation": {
            "type": "object",
            "required": ["user", "read", "write", "changeAccess", "readVia", "writeVia"],
            "properties": {
                "user": {"type": "string"},
                "login": {"type": "string"},
                "read": {"type": "boolean"},
                "write": {"type": "boolean"},
                "changeAccess": {"type": "boolean"},
                "readVia": {**_STRINGS, "description": "owner, group, access, branch or admin"},
                "writeVia": _STRINGS,
            },
        },
        "ChangeFeed": {
            "type": "object",
            "required": ["changes", "next"],
            "properties": {
                "changes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["op", "id", "rev", "ts"],
                        "properties": {
                            "op": {"enum": ["create", "update", "delete", "enter", "leave"]},
                            "id": {"type": "string"},
                            "rev": {"type": "integer"},
                            "ts": {"type": "integer", "description": "Unix ms"},
                            "entity": {"type": "object"},
                        },
                    },
                },
                "next": {"type": ["string", "null"], "description": "Poll again with since=next"},
            },
        },
        "HistoryEntry": {
            "type": "object",
            "required": ["rev", "op", "at", "by", "changes"],
            "properties": {
                "rev": {"type": "integer"},
                "op": {"enum": ["create", "update", "delete"]},
                "at": _TIME,
                "by": {"type": ["string", "null"], "description": "null: made in the database"},
                "changes": {"type": "object", "description": '{"path": {"from", "to"}}'},
            },
        },
        "AuditEntry": {
            "type": "object",
            "required": ["id", "at", "action", "user"],
            "properties": {
                "id": {"type": "string"},
                "at": _TIME,
                "action": {"type": "string"},
                "user": {"type": ["string", "null"]},
            },
            "additionalProperties": True,
        },
        "BulkInput": {
            "type": "object",
            "required": ["operations"],
            "properties": {
                "operations": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {
                        "type": "object",
                        "required": ["op"],
                        "properties": {
                            "op": {"enum": ["create", "patch", "access", "delete"]},
                            "entity": {"type": "object"},
                            "id": {"type": "string"},
                            "changes": {"type": "object"},
                            "ifMatch": {"type": "string"},
                        },
                    },
                },
                "ordered": {"type": "boolean", "default": True},
            },
        },
        "BulkResult": {
            "type": "object",
            "required": ["success", "results"],
            "properties": {
                "success": {"type": "boolean"},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "status": {"type": ["integer", "null"]},
                            "attempted": {"const": False},
                            "id": {"type": "string"},
                            "rev": {"type": "integer"},
                            "entity": {"type": "object"},
                            "error": _ref("Error"),
                        },
                    },
                },
            },
        },
        "Credentials": {
            "type": "object",
            "required": ["login", "password"],
            "properties": {"login": {"type": "string"}, "password": {"type": "string"}},
        },
        "Token": {
            "type": "object",
            "required": ["token", "expiresAt"],
            "properties": {
                "success": {"const": True},
                "type": {"type": "string"},
                "token": {"type": "string"},
                "issuedAt": {"type": "integer", "description": "Unix ms"},
                "expiresAt": {"type": "integer", "description": "Unix ms"},
            },
        },
        "Me": {
            "type": "object",
            "required": ["id", "login", "admin"],
            "properties": {"id": {"type": "string"}, **_ACCOUNT},
        },
        "User": {
            "type": "object",
            "required": ["id", "login", "admin", "disabled"],
            "properties": {
                "id": {"type": "string"},
                **_ACCOUNT,
                "disabled": {"type": "boolean"},
                "createdAt": _TIME,
                "updatedAt": _TIME,
            },
        },
        "UserInput": {
            "type": "object",
            "properties": {
                **_ACCOUNT,
                "password": {"type": "string"},
                "disabled": {"type": "boolean"},
            },
        },
        "PersonalToken": {
            "type": "object",
            "required": ["id", "name"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "token": {"type": "string", "description": "Shown once, when created"},
                "createdAt": _TIME,
                "expiresAt": _TIME,
                "lastUsedAt": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "PersonalTokenInput": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 200},
                "expiresIn": {"type": "integer", "minimum": 1, "description": "Seconds"},
            },
        },
        "StoreSummary": {
            "type": "object",
            "required": ["name", "defined"],
            "properties": {
                "name": {"type": "string"},
                "title": {"type": ["string", "null"]},
                "description": {"type": ["string", "null"]},
                "defined": {"type": "boolean"},
                "version": {"type": ["integer", "null"]},
                "count": {"type": "integer", "description": "Admins only; an estimate"},
            },
        },
        "DefinitionInput": {
            "type": "object",
            "required": ["schema"],
            "properties": {
                "title": {"type": "string", "maxLength": 200},
                "description": {"type": "string", "maxLength": 4000},
                "schema": {
                    "type": "object",
                    "description": "JSON Schema 2020-12 of the entity's own fields",
                },
                "unique": _STRINGS,
                "indexes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["fields"],
                        "properties": {
                            "fields": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "prefixItems": [{"type": "string"}, {"enum": [1, -1]}],
                                },
                            }
                        },
                    },
                },
            },
        },
        "Definition": {
            "type": "object",
            "required": ["name", "defined"],
            "properties": {
                "name": {"type": "string"},
                "defined": {"type": "boolean"},
                "version": {"type": "integer"},
                "title": {"type": ["string", "null"]},
                "description": {"type": ["string", "null"]},
                "schema": {"type": "object"},
                "unique": _STRINGS,
                "indexes": {"type": "array"},
                "createdAt": _TIME,
                "updatedAt": _TIME,
            },
        },
        "DryRun": {
            "type": "object",
            "required": ["dryRun", "checked", "rejected", "examples"],
            "properties": {
                "dryRun": {"const": True},
                "name": {"type": "string"},
                "checked": {"type": "integer"},
                "rejected": {"type": "integer"},
                "examples": {"type": "array", "maxItems": 10},
                "duplicates": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
    },
}

_LIST_PARAMETERS = [
    _query("limit", {"type": "integer", "minimum": 0}, f"Page size (at most {MAX_LIMIT})"),
    _query("offset", {"type": "integer", "minimum": 0}, "Entities to skip"),
    _query("only", {"type": "string"}, "Comma-separated field paths to return (with _id)"),
    _query("meta", {"type": "boolean"}, "Answer count, first and last instead of a page"),
    _query("from", {"type": "string"}, "Created at or after: Unix ms or ISO 8601"),
    _query("to", {"type": "string"}, "Created at or before: Unix ms or ISO 8601"),
    _query("begin", {"type": "string"}, "Same as from"),
    _query("end", {"type": "string"}, "Same as to"),
    _query("after", ENTITY_ID, "Continue after this id (default order only)"),
    _query("where", {"type": "string"}, "A JSON filter: field paths to conditions (README)"),
    _query("sort", {"type": "string"}, "Up to 4 field paths, - for descending: -amount,title"),
    _query("cursor", {"type": "string"}, "The next page of a sorted list (from the Link header)"),
]
_ONLY = [_query("only", {"type": "string"}, "Comma-separated field paths to return")]
_LINK = {"Link": {"schema": {"type": "string"}, "description": 'rel="next" when more follow'}}
_LOCATION = {"Location": {"schema": {"type": "string"}}}
_ETAG = {"ETag": {"schema": {"type": "string"}, "description": 'The revision, e.g. "3"'}}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "schema": {"type": "string"},
    "description": 'Change only if the entity is at this revision ("3"), or exists (*)',
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Repeats within 24 h replay the first answer (Idempotent-Replayed: true)",
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "schema": {"type": "string"},
    "description": "Answer 304 while the entity is still at this revision",
}


def _links(prefix: str, generic: bool) -> Json:
    """How a created entity's id feeds the operations on it (OpenAPI links)."""
    parameters = {"id": "$response.body#/_id"}
    if generic:
        parameters["store"] = "$request.path.store"
    return {
        name: {"operationId": f"{operation}:{prefix}", "parameters": parameters}
        for name, operation in (
            ("read", "get"),
            ("change", "patch"),
            ("delete", "delete"),
            ("setAccess", "access"),
        )
    }


def _store_paths(prefix: str, schemas: Json, parameters: list[Json], tag: str) -> Json:
    """The five entity operations under ``prefix`` (``/api/v1/{store}`` or a defined store)."""
    entity, entity_input, changes = schemas["entity"], schemas["input"], schemas["changes"]
    one = [*parameters, _path_param("id", ENTITY_ID, "The entity's id")]
    replayed = {"Idempotent-Replayed": {"schema": {"type": "string"}}}
    created = _json(entity, "Created", {**_LOCATION, **_ETAG, **replayed})
    created["links"] = _links(prefix, generic=bool(parameters))
    return {
        prefix: {
            "parameters": parameters,
            "get": {
                "operationId": f"list:{prefix}",
                "tags": [tag],
                "summary": "List entities (creation order) or, with meta=true, count them",
                "parameters": _LIST_PARAMETERS,
                "responses": {
                    "200": _json(
                        {"oneOf": [{"type": "array", "items": entity}, _ref("Meta")]},
                        "A page of entities (or meta)",
                        _LINK,
                    ),
                    **_errors(*_READ_ERRORS, "504"),
                },
            },
            "post": {
                "operationId": f"create:{prefix}",
                "tags": [tag],
                "summary": "Create an entity",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": _body(entity_input),
                "responses": {
                    "201": created,
                    **_errors(*_WRITE_ERRORS, "422"),
                },
            },
        },
        f"{prefix}/_changes": {
            "parameters": parameters,
            "get": {
                "operationId": f"changes:{prefix}",
                "tags": [tag],
                "summary": "What changed since a cursor, in commit order (poll with next)",
                "parameters": [
                    _query("since", {"type": "string"}, "A next cursor, or 0; none: from now"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "At most"),
                    _query("where", {"type": "string"}, "A JSON filter"),
                    _query("only", {"type": "string"}, "Fields of the entities to send"),
                ],
                "responses": {
                    "200": _json(_ref("ChangeFeed")),
                    **_errors("400", "401", "403", "410", "503", "504"),
                },
            },
        },
        f"{prefix}/_bulk": {
            "parameters": parameters,
            "post": {
                "operationId": f"bulk:{prefix}",
                "tags": [tag],
                "summary": "Up to 1000 creates, patches, access changes and deletes",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": _body(_ref("BulkInput")),
                "responses": {
                    "200": _json(_ref("BulkResult"), "One result per operation, in order"),
                    **_errors("400", "401", "403", "413", "415", "422", "503"),
                },
            },
        },
        f"{prefix}/{{id}}": {
            "parameters": one,
            "get": {
                "operationId": f"get:{prefix}",
                "tags": [tag],
                "summary": "Read one entity",
                "parameters": [*_ONLY, _IF_NONE_MATCH],
                "responses": {
                    "200": _json(entity, "OK", _ETAG),
                    "304": {"description": "Unchanged since If-None-Match", "headers": _ETAG},
                    **_errors(*_READ_ERRORS),
                },
            },
            "patch": {
                "operationId": f"patch:{prefix}",
                "tags": [tag],
                "summary": "Change fields (protected fields may only be sent unchanged)",
                "parameters": [_IF_MATCH],
                "requestBody": _body(changes),
                "responses": {
                    "200": _json(entity, "OK", _ETAG),
                    **_errors(*_WRITE_ERRORS, "412"),
                },
            },
            "delete": {
                "operationId": f"delete:{prefix}",
                "tags": [tag],
                "summary": "Delete an entity",
                "parameters": [_IF_MATCH],
                "responses": {"200": _json(_ref("Success")), **_errors(*_WRITE_ERRORS, "412")},
            },
        },
        f"{prefix}/{{id}}/_explain": {
            "parameters": one,
            "get": {
                "operationId": f"explain:{prefix}",
                "tags": [tag],
                "summary": "May a user read and change it, and through which fields? (admins)",
                "parameters": [
                    {**_query("user", {"type": "string"}, "The user's id"), "required": True}
                ],
                "responses": {"200": _json(_ref("Explanation")), **_errors(*_READ_ERRORS)},
            },
        },
        f"{prefix}/{{id}}/_history": {
            "parameters": one,
            "get": {
                "operationId": f"history:{prefix}",
                "tags": [tag],
                "summary": "The entity's versions, newest first (after a delete: admins)",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("HistoryEntry")}),
                    **_errors(*_READ_ERRORS),
                },
            },
        },
        f"{prefix}/{{id}}/access": {
            "parameters": one,
            "put": {
                "operationId": f"access:{prefix}",
                "tags": [tag],
                "summary": "Set owner (admins), group, access and branch",
                "parameters": [_IF_MATCH],
                "requestBody": _body(_ref("AccessChanges")),
                "responses": {
                    "200": _json(entity, "OK", _ETAG),
                    **_errors(*_WRITE_ERRORS, "412"),
                },
            },
        },
    }


_STORE_PARAM = _path_param(
    "store", {"type": "string", "pattern": f"^{STORE_NAME.pattern}$"}, "The store's name"
)
_GENERIC = {
    "entity": _ref("Entity"),
    "input": _ref("EntityInput"),
    "changes": _ref("Changes"),
}


def _fixed_paths() -> Json:
    auth_errors = _errors("400", "401", "413", "415", "429", "503")
    signed_in = _errors("401", "503")
    admin_read = _errors("400", "401", "403", "404", "503")
    admin_write = _errors("400", "401", "403", "404", "409", "413", "415", "503")
    paths: Json = {
        "/healthz": {
            "get": {
                "tags": ["system"],
                "summary": "Health: 200 while the database answers",
                "security": [],
                "responses": {"200": _json({"type": "object"}), **_errors("503")},
            }
        },
        f"{V1}/openapi.json": {
            "get": {
                "tags": ["system"],
                "summary": "This document",
                "security": [],
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/admin": {
            "get": {
                "tags": ["system"],
                "summary": "The administration console (every /admin/... URL is this page)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/api/docs": {
            "get": {
                "tags": ["system"],
                "summary": "The reference page rendered from this document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        f"{V1}/auth": {
            "post": {
                "tags": ["auth"],
                "summary": "Sign in; sets the sid session cookie",
                "security": [],
                "requestBody": _body(_ref("Credentials")),
                "responses": {"200": _json(_ref("Success")), **auth_errors},
            },
            "delete": {
                "tags": ["auth"],
                "summary": "Sign out (ends the session or token used)",
                "responses": {"200": _json(_ref("Success")), **_errors("401", "403", "415", "503")},
            },
        },
        f"{V1}/auth/token": {
            "post": {
                "tags": ["auth"],
                "summary": "Exchange login and password for a bearer token",
                "security": [],
                "requestBody": _body(_ref("Credentials")),
                "responses": {"200": _json(_ref("Token")), **auth_errors},
            }
        },
        f"{V1}/_me": {
            "get": {
                "tags": ["auth"],
                "summary": "The signed-in user",
                "responses": {"200": _json(_ref("Me")), **signed_in},
            }
        },
        f"{V1}/_users": {
            "get": {
                "tags": ["users"],
                "summary": "Every user (admins)",
                "responses": {"200": _json({"type": "array", "items": _ref("User")}), **admin_read},
            },
            "post": {
                "tags": ["users"],
                "summary": "Create a user (admins)",
                "requestBody": _body(_ref("UserInput")),
                "responses": {"201": _json(_ref("User"), "Created", _LOCATION), **admin_write},
            },
        },
        f"{V1}/_users/{{user_id}}": {
            "parameters": [_path_param("user_id", {"type": "string"}, "The user's id")],
            "get": {
                "tags": ["users"],
                "summary": "One user (admins)",
                "responses": {"200": _json(_ref("User")), **admin_read},
            },
            "patch": {
                "tags": ["users"],
                "summary": "Change a user (admins)",
                "requestBody": _body(_ref("UserInput")),
                "responses": {"200": _json(_ref("User")), **admin_write},
            },
            "delete": {
                "tags": ["users"],
                "summary": "Delete a user and end their sessions and tokens (admins)",
                "responses": {"200": _json(_ref("Success")), **admin_write},
            },
        },
        f"{V1}/_tokens": {
            "get": {
                "tags": ["tokens"],
                "summary": "The caller's personal tokens",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("PersonalToken")}),
                    **signed_in,
                },
            },
            "post": {
                "tags": ["tokens"],
                "summary": "Issue a personal token (its secret is shown once)",
                "requestBody": _body(_ref("PersonalTokenInput")),
                "responses": {
                    "201": _json(_ref("PersonalToken"), "Created", _LOCATION),
                    **_errors("400", "401", "403", "413", "415", "503"),
                },
            },
        },
        f"{V1}/_tokens/{{token_id}}": {
            "parameters": [_path_param("token_id", {"type": "string"}, "The token's id")],
            "delete": {
                "tags": ["tokens"],
                "summary": "Revoke one of the caller's personal tokens",
                "responses": {
                    "200": _json(_ref("Success")),
                    **_errors("400", "401", "403", "404", "415", "503"),
                },
            },
        },
        f"{V1}/_audit": {
            "get": {
                "tags": ["users"],
                "summary": "The audit log, newest first (admins)",
                "parameters": [
                    _query("user", {"type": "string"}, "Entries by this user id"),
                    _query("store", {"type": "string"}, "Entries about this store"),
                    _query("from", {"type": "string"}, "At or after: Unix ms or ISO 8601"),
                    _query("to", {"type": "string"}, "At or before"),
                    _query("before", ENTITY_ID, "The next page (from the Link header)"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page"),
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("AuditEntry")}, "OK", _LINK),
                    **admin_read,
                },
            }
        },
        f"{V1}/_stores": {
            "get": {
                "tags": ["stores"],
                "summary": "Every store, defined or holding entities",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("StoreSummary")}),
                    **signed_in,
                },
            }
        },
        f"{V1}/_stores/{{store}}": {
            "parameters": [_STORE_PARAM],
            "get": {
                "tags": ["stores"],
                "summary": "A store's definition ({name, defined: false} without one)",
                "responses": {"200": _json(_ref("Definition")), **_errors(*_READ_ERRORS)},
            },
            "put": {
                "tags": ["stores"],
                "summary": "Create or replace a definition (admins); dryRun=true only checks",
                "parameters": [
                    _query("dryRun", {"type": "boolean"}, "Count what the definition would reject")
                ],
                "requestBody": _body(_ref("DefinitionInput")),
                "responses": {
                    "200": _json({"oneOf": [_ref("Definition"), _ref("DryRun")]}),
                    **admin_write,
                },
            },
            "delete": {
                "tags": ["stores"],
                "summary": "Remove a definition (admins); drop=true also drops the entities",
                "parameters": [_query("drop", {"type": "boolean"}, "Drop the store too")],
                "responses": {"200": _json(_ref("Success")), **admin_write},
            },
        },
    }
    paths.update(_store_paths(f"{V1}/{{store}}", _GENERIC, [_STORE_PARAM], "entities"))
    return paths


def _pointed(node: Any, base: str) -> Any:
    """A copy of a store schema whose local ``$ref``s point into its component."""
    if isinstance(node, dict):
        copied = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                copied[key] = base + value[1:]
            elif key in ("const", "enum", "default", "examples"):
                copied[key] = copy.deepcopy(value)
            else:
                copied[key] = _pointed(value, base)
        return copied
    if isinstance(node, list):
        return [_pointed(item, base) for item in node]
    return node


def _defined_schemas(definition: Definition) -> tuple[str, Json, Json]:
    """The component name, its schemas (fields, input, entity, changes) and the
    references to them for ``_store_paths``."""
    name = f"store.{definition.name}"
    base = f"#/components/schemas/{name}"
    raw = {k: v for k, v in definition.schema.raw.items() if k != "$schema"}
    fields = _pointed(raw, base)
    properties = fields.get("properties") or {}
    entity_input = {**fields, "properties": {**properties, **_ACCESS_INPUT}}
    entity_input.pop("$defs", None)
    entity = {
        k: v for k, v in fields.items() if k not in ("required", "$defs", "dependentRequired")
    }
    entity["properties"] = {**properties, **SERVER_PROPERTIES}
    entity["required"] = ["_id"]
    entity["description"] = (
        "An entity of this store (entities written before its definition may differ)"
    )
    changes = {
        "type": "object",
        "description": "Fields to set (dotted paths allowed); the result must fit the schema",
        "properties": {k: v for k, v in properties.items() if isinstance(v, dict)},
        "additionalProperties": True,
    }
    components = {
        name: fields,
        f"{name}.input": entity_input,
        f"{name}.entity": entity,
        f"{name}.changes": changes,
    }
    return (
        name,
        components,
        {
            "entity": _ref(f"{name}.entity"),
            "input": _ref(f"{name}.input"),
            "changes": _ref(f"{name}.changes"),
        },
    )


class OpenAPI:
    """The document, rebuilt when the definitions change."""

    def __init__(self, definitions: Definitions):
        self.definitions = definitions
        self._fixed = _fixed_paths()
        self._built: tuple[int, Json] | None = None

    def document(self) -> Json:
        generation = self.definitions.generation
        if self._built is not None and self._built[0] == generation:
            return self._built[1]
        components = copy.deepcopy(_COMPONENTS)
        paths = dict(self._fixed)
        tags = [
            {"name": "system"},
            {"name": "auth"},
            {"name": "users"},
            {"name": "tokens"},
            {"name": "stores"},
            {"name": "entities", "description": "Any store, defined or not"},
        ]
        for definition in self.definitions.all():
            _, schemas, refs = _defined_schemas(definition)
            components["schemas"].update(schemas)
            tag = f"store: {definition.name}"
            about = definition.description or definition.title or ""
            tags.append({"name": tag, "description": about})
            paths.update(_store_paths(f"{V1}/{definition.name}", refs, [], tag))
        document: Json = {
            "openapi": "3.1.0",
            "info": {
                "title": "Entity platform API",
                "version": "1",
                "description": (
                    "Store and fetch JSON entities in named stores. Realtime changes: "
                    "Socket.IO at /socket.io (see the README)."
                ),
            },
            "servers": [{"url": "/"}],
            "security": [{"bearer": []}, {"cookie": []}],
            "tags": tags,
            "paths": paths,
            "components": components,
        }
        self._built = (generation, document)
        return document
