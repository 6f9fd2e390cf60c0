"""JSON rendering of BSON types: ISO 8601 UTC dates with milliseconds, hex ObjectIds."""

from __future__ import annotations

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
