"""HTTP plumbing shared by the handlers: JSON bodies in, JSON (or streamed JSON) out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app import jsonio, validation
from app.acl import REVISION, revision_of
from app.errors import BadRequest, Invalid, TooLarge
from app.services import Services

SUCCESS = {"success": True, "sucess": True}


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


class JSONBytes(Response):
    """A response of JSON already rendered, its headers built directly (Starlette's generic
    header handling was a visible share of a GET)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200, headers: Mapping[str, str] | None = None):
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = _json_headers(headers, (b"content-length", str(len(body)).encode()))


def _json_headers(
    headers: Mapping[str, str] | None, *first: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    raw = [*first, (b"content-type", b"application/json")]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return raw


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONBytes(jsonio.dumps(data), status, headers)


def entity_response(
    entity: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """One entity, with its revision as the ``ETag`` (the revision itself is never shown)."""
    tag = f'"{revision_of(entity)}"'
    entity.pop(REVISION, None)
    return json_response(entity, status, {**(headers or {}), "ETag": tag})


def precondition(request: Request, name: str = "if-match") -> str | None:
    """An ``If-Match``/``If-None-Match`` header: a revision (``"3"`` or ``3``, as
    ``validation.revision`` reads one), ``*``, or None."""
    raw = request.headers.get(name)
    if raw is None:
        return None
    tag = raw.strip(" \t")
    if tag == "*":
        return tag
    if len(tag) > 1 and tag[0] == tag[-1] == '"':
        tag = tag[1:-1]
    if not validation.revision(tag):
        raise Invalid(name, 'expected one entity tag, such as "3", or *')
    return tag


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, limit: int | None = None) -> Any:
    """The request body parsed as JSON, refusing bodies over ``limit`` (MAX_BODY_BYTES by
    default) before reading them whole."""
    limit = limit or services(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not validation.digits(declared):
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise TooLarge(f"The body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"The body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadRequest("A JSON body is required")
    try:
        return jsonio.loads(raw)
    except jsonio.OutOfRange as exc:
        raise Invalid(exc.path, "integers must fit in 64 bits") from None
    except ValueError:
        raise BadRequest("The body is not valid JSON") from None


class JSONStream(Response):
    """A JSON body sent in chunks as ``chunks`` yields them. Starlette's StreamingResponse
    runs a task group per response to notice a client going away; Admission already does
    that for every API request (and cancels its work), so this one only sends."""

    media_type = "application/json"

    def __init__(self, chunks: AsyncIterator[bytes], headers: Mapping[str, str] | None = None):
        self.status_code = 200
        self.body_iterator = chunks
        self.background = None
        self.raw_headers = _json_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def json_array_response(
    slices: AsyncIterator[list[Any]], headers: Mapping[str, str] | None = None
) -> JSONStream:
    """A JSON array streamed a slice of documents at a time as the cursor yields them, so a
    10,000-entity page never sits whole in memory."""

    async def body() -> AsyncIterator[bytes]:
        opening = b"["
        async for documents in slices:
            if documents:
                yield opening + jsonio.dumps_items(documents)
                opening = b","
        yield b"[]" if opening == b"[" else b"]"

    return JSONStream(body(), headers)
