"""A raw-batch cursor that hands each batch on as the BSON the database sent, without first
building a Python object per document.

PyMongo's ``find_raw_batches`` cursor walks every reply's batch once as a list of
``RawBSONDocument`` objects (one per entity, thrown away at once) before it joins the batch
into one BSON stream. For a 10,000-entity page that walk was most of the client CPU of the
read: 9-13 ms against 3-4 ms without it (measured in-process, four round trips of 2,500
entities of two fields). Here a reply's cursor document is read field by field and its batch
goes to bson's own array-to-stream conversion directly. Everything else (the find and
getMore commands, sessions, the deadline, retries, closing) is the driver's.

A reply holding a field of a type this reader does not know is unpacked the driver's way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.cursor import AsyncRawBatchCursor

# bson's C conversion of a BSON array of documents into a stream of documents, which the
# driver's raw-batch cursor uses. It is not public: should a later bson lack it, every reply
# is unpacked the driver's way.
_Convert = Callable[[memoryview], bytes]
_to_stream: _Convert | None = getattr(bson, "_array_of_documents_to_buffer", None)

_BATCHES = (b"firstBatch", b"nextBatch")
_INT32 = struct.Struct("<i")
# Fields of a cursor document, by BSON type: the fixed sizes, and the types that begin with
# their length (plus what the length leaves out).
_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
_SIZED = {0x02: 4, 0x03: 0, 0x04: 0, 0x05: 5}


class _UnknownField(ValueError):
    pass


def cursor_fields(raw: bytes) -> dict[str, Any]:
    """A reply's cursor document: its batch as ``[stream]`` (or ``[]`` when empty), every
    other field decoded."""
    fields: dict[str, Any] = {}
    position, end = 4, len(raw) - 1
    while position < end:
        kind = raw[position]
        name_end = raw.index(b"\x00", position + 1)
        name = raw[position + 1 : name_end]
        value = name_end + 1
        if kind in _FIXED:
            size = _FIXED[kind]
        elif kind in _SIZED:
            size = _INT32.unpack_from(raw, value)[0] + _SIZED[kind]
        else:
            raise _UnknownField(kind)
        following = value + size
        if kind == 0x04 and name in _BATCHES:
            if _to_stream is None:
                raise _UnknownField(kind)
            stream = _to_stream(memoryview(raw)[value:following])  # not a copy
            fields[name.decode()] = [stream] if stream else []
        else:
            element = raw[position:following]
            fields.update(bson.decode(_INT32.pack(len(element) + 5) + element + b"\x00"))
        position = following
    return fields


class RawBatches(AsyncRawBatchCursor[dict[str, Any]]):
    """``find_raw_batches`` without the object per document (see the module's note)."""

    def _unpack_response(
        self,
        response: Any,
        cursor_id: int | None,
        codec_options: CodecOptions[Any],
        user_fields: Mapping[str, Any] | None = None,
        legacy_response: bool = False,
    ) -> list[Any]:
        payload = getattr(response, "payload_document", None)
        if not legacy_response and isinstance(payload, bytes | memoryview):
            reply = dict(RawBSONDocument(payload).items())  # its own fields only
            cursor = reply.get("cursor")
            try:
                if isinstance(cursor, RawBSONDocument):
                    reply["cursor"] = cursor_fields(bytes(cursor.raw))
                    return [reply]
            except _UnknownField:
                pass
        return super()._unpack_response(
            response, cursor_id, codec_options, user_fields, legacy_response
        )
