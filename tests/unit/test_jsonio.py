"""JSON rendering of BSON types: ISO 8601 UTC dates with milliseconds, hex ObjectIds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from bson import ObjectId
from bson.datetime_ms import DatetimeMS

from app import jsonio

MOMENT = datetime(2026, 11, 25, 17, 47, 20, 178000, tzinfo=UTC)
RENDERED = "2026-11-25T17:47:20.178Z"


@pytest.mark.parametrize(
    "value",
    [
        MOMENT,
        MOMENT.replace(tzinfo=None),
        MOMENT.astimezone(timezone(timedelta(hours=5, minutes=30))),
        MOMENT.astimezone(timezone(-timedelta(hours=8))),
        MOMENT + timedelta(microseconds=999),  # sub-millisecond digits are dropped
        DatetimeMS(MOMENT),
        DatetimeMS(1795628840178),
        1795628840178,
    ],
)
def test_iso_ms_is_utc_with_milliseconds_and_z(value):
    assert jsonio.iso_ms(value) == RENDERED


def test_iso_ms_pads_and_handles_the_epoch():
    assert jsonio.iso_ms(datetime(2020, 1, 2, 3, 4, 5, 6000)) == "2020-01-02T03:04:05.006Z"
    assert jsonio.iso_ms(DatetimeMS(0)) == "1970-01-01T00:00:00.000Z"
    assert jsonio.iso_ms(DatetimeMS(-1)) == "1969-12-31T23:59:59.999Z"


def test_iso_ms_outside_datetime_range_falls_back_to_the_number():
    assert jsonio.iso_ms(DatetimeMS(2**62)) == str(2**62)


@pytest.mark.parametrize("millis", [0, 1, -1, 1567285200001, 2198351869457, -35184015521351])
def test_ms_is_exact(millis):
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    assert jsonio.ms(moment) == millis
    assert jsonio.ms(moment.replace(tzinfo=None)) == millis
    assert jsonio.ms(moment + timedelta(microseconds=999)) == millis


def test_dumps_renders_bson_types():
    oid = ObjectId("65f0aaaaaaaaaaaaaaaaaaaa")
    document = {
        "_id": oid,
        "createdAt": DatetimeMS(MOMENT),
        "at": MOMENT,
        "refs": [oid],
        "nested": {"when": MOMENT.replace(tzinfo=None)},
        "raw": b"\x01\xff",
    }
    assert jsonio.loads(jsonio.dumps(document)) == {
        "_id": "65f0aaaaaaaaaaaaaaaaaaaa",
        "createdAt": RENDERED,
        "at": RENDERED,
        "refs": ["65f0aaaaaaaaaaaaaaaaaaaa"],
        "nested": {"when": RENDERED},
        "raw": "01ff",
    }


def test_loads_refuses_invalid_json():
    with pytest.raises(ValueError, match=r"."):
        jsonio.loads(b"{nope")


def _deep(levels: int) -> object:
    value: object = [1, "x", None]
    for n in range(levels):
        value = {"a": value, "n": n} if n % 2 else [value, True]
    return value


@pytest.mark.parametrize("levels", [0, 1, 10, 253, 254, 255, 300])
def test_dumps_renders_any_depth_as_the_standard_library_would(levels):
    value = _deep(levels)
    assert json.loads(jsonio.dumps(value)) == value
    assert json.loads(jsonio.safe_dumps(value)) == value


def test_dumps_renders_depths_no_recursive_encoder_reaches():
    value: object = 1
    for _ in range(20000):
        value = {"a": [value]}
    assert jsonio.dumps(value) == b'{"a":[' * 20000 + b"1" + b"]}" * 20000


def test_safe_dumps_matches_dumps_on_bson_values():
    from bson import Decimal128, Regex

    value = {
        "id": ObjectId("65f0aaaaaaaaaaaaaaaaaaaa"),
        "at": DatetimeMS(MOMENT),
        "b": b"\x01",
        "d": Decimal128("1.5"),
        "r": Regex("^a"),
        "s": "\u00e9\U0001f4a5",
        "nan": float("nan"),
        1: [],
        "e": {},
    }
    assert jsonio.safe_dumps(value) == jsonio.dumps(value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("18446744073709551616", "body"),
        ('{"n": -9223372036854775809}', "n"),
        ('{"a": [0, {"b": 100000000000000000000}]}', "a.1.b"),
    ],
)
def test_loads_refuses_integers_beyond_64_bits_naming_where(text, where):
    for data in (text, text.encode()):
        with pytest.raises(jsonio.OutOfRange) as caught:
            jsonio.loads(data)
        assert caught.value.path == where


def test_loads_keeps_64_bit_integers_floats_and_long_digit_strings():
    text = '{"a": 9223372036854775807, "b": -9223372036854775808, "c": "12345678901234567890"}'
    assert jsonio.loads(text) == {"a": 2**63 - 1, "b": -(2**63), "c": "12345678901234567890"}
    assert jsonio.loads("[1.2345678901234567890, 1e30]") == [1.2345678901234567, 1e30]
