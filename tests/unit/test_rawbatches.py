"""How the raw-batch reader takes a reply's cursor document apart (the whole list path runs
against a real database in tests/e2e/test_big_lists.py and the list tests)."""

from __future__ import annotations

import re

import bson
import pytest
from bson import Int64, ObjectId, Regex, Timestamp
from bson.codec_options import DEFAULT_CODEC_OPTIONS as CODEC
from pymongo.message import _OpMsg

from app import rawbatches
from app.rawbatches import RawBatches, _UnknownField, cursor_fields

CURSOR_FIELDS = {"cursor": {"firstBatch": 1, "nextBatch": 1}}  # what the driver passes
ENTITIES = [{"_id": ObjectId(), "n": n, "name": f"entity {n}", "tags": ["a", n]} for n in range(5)]


@pytest.mark.parametrize("batch", ["firstBatch", "nextBatch"])
def test_the_batch_becomes_one_stream_and_the_rest_is_decoded(batch: str):
    cursor = {
        batch: ENTITIES,
        "id": Int64(1234567890123),
        "ns": "platform.deals",
        "atClusterTime": Timestamp(1700000000, 3),
        "partialResultsReturned": False,
        "postBatchResumeToken": {"$recordId": Int64(7)},
    }
    fields = cursor_fields(bson.encode(cursor))
    (stream,) = fields.pop(batch)
    assert bson.decode_all(stream) == ENTITIES
    assert fields == {k: v for k, v in cursor.items() if k != batch}


def test_an_empty_batch_is_an_empty_list():
    fields = cursor_fields(bson.encode({"firstBatch": [], "id": Int64(0), "ns": "p.s"}))
    assert fields == {"firstBatch": [], "id": 0, "ns": "p.s"}


def test_a_field_of_a_type_it_does_not_know_is_refused():
    raw = bson.encode({"firstBatch": ENTITIES, "odd": Regex("x"), "id": Int64(0)})
    with pytest.raises(_UnknownField):
        cursor_fields(raw)


def test_strings_inside_entities_that_look_like_keys_change_nothing():
    # An entity may hold any bytes, the batch's own key name included.
    tricky = [{"_id": 1, "s": "\x04nextBatch\x00\x05\x00\x00\x00\x00", "b": b"\x04firstBatch\x00"}]
    fields = cursor_fields(bson.encode({"id": Int64(0), "firstBatch": tricky, "ns": "p.s"}))
    assert bson.decode_all(fields["firstBatch"][0]) == tricky
    assert fields["ns"] == "p.s"


def test_a_reply_it_cannot_read_is_unpacked_the_drivers_way():
    cursor = RawBatches.__new__(RawBatches)  # only the unpacking is exercised here
    plain = {"cursor": {"firstBatch": ENTITIES, "id": Int64(0), "ns": "p.s"}, "ok": 1.0}
    odd = {"cursor": {"firstBatch": ENTITIES, "id": Int64(0), "re": re.compile("x")}, "ok": 1.0}
    for reply in (plain, odd):
        message = _OpMsg(0, bson.encode(reply))
        (unpacked,) = cursor._unpack_response(message, None, CODEC, CURSOR_FIELDS)
        assert unpacked["ok"] == 1.0
        (stream,) = unpacked["cursor"]["firstBatch"]
        assert bson.decode_all(stream) == ENTITIES
        assert unpacked["cursor"]["id"] == 0


def test_without_bsons_array_conversion_every_reply_is_unpacked_the_drivers_way(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(rawbatches, "_to_stream", None)
    cursor = RawBatches.__new__(RawBatches)
    reply = {"cursor": {"nextBatch": ENTITIES, "id": Int64(0), "ns": "p.s"}, "ok": 1.0}
    (unpacked,) = cursor._unpack_response(_OpMsg(0, bson.encode(reply)), None, CODEC, CURSOR_FIELDS)
    (stream,) = unpacked["cursor"]["nextBatch"]
    assert bson.decode_all(stream) == ENTITIES
