"""Opaque, signed cursors for sorted lists: the last entity's sort values and id, bound to
the store and the sort they came from, so a tampered or foreign cursor is refused (400)."""

from __future__ import annotations

import base64
from typing import Any

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion

from app.errors import Invalid
from app.query import Resume, Sort
from app.seal import Seal

MAX_CHARS = 2048  # longer sort values make the next link fall back to offset
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


class Cursors:
    def __init__(self, secret: str):
        self._seal = Seal(secret, "list-cursor")

    def make(self, store: str, sort: Sort, values: list[Any], last_id: ObjectId) -> str | None:
        """The cursor for the page after ``last_id``; None when it would be too long."""
        payload = bson.encode(
            {"t": store, "s": [list(key) for key in sort.keys], "v": values, "i": last_id}
        )
        token = f"{_b64(payload)}.{_b64(self._seal.of(payload))}"
        return token if len(token) <= MAX_CHARS else None

    def read(self, token: str, store: str, sort: Sort) -> Resume:
        body, _, mac = token.partition(".")
        try:
            payload = _unb64(body)
            valid = self._seal.matches(payload, _unb64(mac))
        except ValueError:
            valid = False
        if not valid:
            raise Invalid("cursor", "is not a cursor this server issued")
        decoded = bson.decode(payload, codec_options=_CODEC)
        if decoded.get("t") != store or decoded.get("s") != [list(k) for k in sort.keys]:
            raise Invalid("cursor", "belongs to another list: send the sort it came with")
        return Resume(tuple(decoded["v"]), decoded["i"])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or len(text) > 4 * MAX_CHARS:
        raise ValueError("no cursor")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
