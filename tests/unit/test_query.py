"""List parameters: time parsing, the parameter rules, and the filter, projection and next-page
parameters a query turns into."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from app.clock import parse_time
from app.errors import BadRequest, Invalid
from app.query import MAX_LIMIT, ListQuery, Only, parse_list_query, projection

NEW_YEAR = datetime(2020, 1, 1, tzinfo=UTC)


def q(**params: str | list[str]) -> ListQuery:
    """Parse a query string given as keyword arguments (a list for a repeated name)."""
    return parse_list_query({k: v if isinstance(v, list) else [v] for k, v in params.items()})


# --- parse_time ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("1567285200000", datetime(2019, 8, 31, 21, 0, tzinfo=UTC)),
        ("1567285200123", datetime(2019, 8, 31, 21, 0, 0, 123000, tzinfo=UTC)),
        ("-1000", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_parse_time_reads_unix_milliseconds(raw, expected):
    assert parse_time(raw, "from") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2020-01-01T00:00", NEW_YEAR),
        ("2020-01-01T00:00:00", NEW_YEAR),
        ("2020-01-01T00:00:07", NEW_YEAR + timedelta(seconds=7)),
        ("2020-01-01T00:00:07.5", NEW_YEAR + timedelta(seconds=7, milliseconds=500)),
        ("2020-01-01T00:00:07.123", NEW_YEAR + timedelta(seconds=7, milliseconds=123)),
        ("2020-01-01T00:00:07.123456789", NEW_YEAR + timedelta(seconds=7, microseconds=123456)),
        ("2020-01-01T00:00Z", NEW_YEAR),
        ("2020-01-01T00:00:00.000Z", NEW_YEAR),
        ("2020-01-01T03:00+03:00", NEW_YEAR),
        ("2020-01-01T03:00+0300", NEW_YEAR),
        ("2019-12-31T19:30-04:30", NEW_YEAR),
        ("2020-01-01T03:00:00.000+03:00", NEW_YEAR),
        # A "+" left unencoded in a query string arrives as a space.
        ("2020-01-01T03:00 03:00", NEW_YEAR),
        ("2020-01-01T03:00:00 0300", NEW_YEAR),
    ],
)
def test_parse_time_reads_iso_8601_forms(raw, expected):
    parsed = parse_time(raw, "from")
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_time_without_offset_is_utc():
    assert parse_time("2020-06-01T12:00", "to") == datetime(2020, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "now",
        "yesterday",
        "2020-01-01",
        "2020-01-01T00",
        "2020-1-1T00:00",
        "20-01-01T00:00",
        "2020-01-01 00:00",
        "2020-13-01T00:00",
        "2020-02-30T00:00",
        "2020-01-01T24:00",
        "2020-01-01T00:60",
        "2020-01-01T00:00:61",
        "2020-01-01T00:00+24:00",
        "2020-01-01T00:00+01:60",
        "2020-01-01T00:00.5",
        "2020-01-01T00:00:00.",
        "2020-01-01T00:00:00+1",
        "2020-01-01T00:00Zjunk",
        "1.5e12",
        "1567285200000.5",
        "+1567285200000",
        "0x10",
        "9999999999999999",
        # Valid fields whose UTC instant falls outside what a date can hold.
        "0001-01-01T00:00+01:00",
        "9999-12-31T23:59-01:00",
        "999999999999999",
        "-999999999999999",
    ],
)
def test_parse_time_refuses_anything_else_naming_the_parameter(raw):
    with pytest.raises(Invalid) as caught:
        parse_time(raw, "begin")
    assert caught.value.field == "begin"
    assert caught.value.message.startswith("begin:")


# --- parse_list_query ---


def test_defaults():
    query = q()
    assert query == ListQuery()
    assert (query.limit, query.offset, query.only, query.meta) == (MAX_LIMIT, 0, None, False)
    assert query.created_from is None and query.created_to is None and query.after is None
    assert MAX_LIMIT == 10000


@pytest.mark.parametrize(
    ("raw", "limit"),
    [("0", 0), ("1", 1), ("9999", 9999), ("10000", 10000), ("10001", 10000), ("0050", 50)],
)
def test_limit_is_capped(raw, limit):
    assert q(limit=raw).limit == limit


@pytest.mark.parametrize("raw", ["99999999999", "123456789012345678901234567890"])
def test_huge_limits_are_capped_too(raw):
    assert q(limit=raw).limit == MAX_LIMIT


@pytest.mark.parametrize("raw", ["0", "7", "10000", "1234567"])
def test_offset_is_taken_as_given(raw):
    assert q(offset=raw).offset == int(raw)


@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize("raw", ["-1", "-0", "1.5", "1e3", "abc", "", " 5", "5 ", "+5"])
def test_limit_and_offset_must_be_whole_numbers(name, raw):
    with pytest.raises(BadRequest) as caught:
        q(**{name: raw})
    assert not isinstance(caught.value, Invalid)
    assert name in caught.value.message


@pytest.mark.parametrize("name", ["limit", "offset", "only", "meta", "from", "to", "after"])
def test_a_parameter_given_twice_is_a_bad_request(name):
    with pytest.raises(BadRequest) as caught:
        q(**{name: ["1", "1"]})
    assert name in caught.value.message


def test_unknown_parameters_are_ignored():
    assert q(order="-name", owner="x", _readers="*") == ListQuery()


@pytest.mark.parametrize(("raw", "meta"), [("true", True), ("TRUE", True), ("1", True)])
def test_meta_flag(raw, meta):
    assert q(meta=raw).meta is meta


@pytest.mark.parametrize("raw", ["false", "0", "False"])
def test_meta_false_lists(raw):
    assert q(meta=raw, limit="3", offset="1") == ListQuery(limit=3, offset=1)


@pytest.mark.parametrize("raw", ["yes", "", "2", "on"])
def test_meta_must_be_a_boolean(raw):
    with pytest.raises(Invalid) as caught:
        q(meta=raw)
    assert caught.value.field == "meta"


@pytest.mark.parametrize("extra", [{"offset": "0"}, {"limit": "10"}, {"offset": "1", "limit": "1"}])
def test_meta_with_offset_or_limit_is_a_bad_request(extra):
    with pytest.raises(BadRequest) as caught:
        q(meta="true", **extra)
    assert not isinstance(caught.value, Invalid)


def test_meta_combines_with_bounds_only_and_after():
    after = ObjectId()
    query = q(meta="true", **{"from": "0", "to": "1000"}, only="a", after=str(after))
    assert query.meta and query.only == Only(("a",)) and query.after == after
    assert query.created_from == datetime(1970, 1, 1, tzinfo=UTC)
    assert query.created_to == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(("name", "synonym"), [("from", "begin"), ("to", "end")])
def test_begin_and_end_are_synonyms(name, synonym):
    by_name = q(**{name: "2020-01-01T00:00"})
    by_synonym = q(**{synonym: "2020-01-01T00:00"})
    assert by_name == by_synonym
    assert NEW_YEAR in (by_name.created_from, by_name.created_to)
    with pytest.raises(BadRequest):
        q(**{name: "0", synonym: "0"})


@pytest.mark.parametrize("name", ["from", "to", "begin", "end"])
def test_bad_bounds_are_invalid_naming_the_parameter(name):
    with pytest.raises(Invalid) as caught:
        q(**{name: "2020-13-01T00:00"})
    assert caught.value.field == name


def test_only_keeps_order_and_drops_duplicates():
    assert q(only="name, description,name").only == Only(("name", "description"))
    assert q(only="address.city,_id").only == Only(("address.city", "_id"))


@pytest.mark.parametrize(
    "raw", ["", ",", "a,", "a,,b", "$where", "a.$b", "a..b", "_readers", "_readers.x", "a,a.b"]
)
def test_bad_only_is_invalid(raw):
    with pytest.raises(Invalid):
        q(only=raw)


@pytest.mark.parametrize("raw", ["xyz", "65f0aaaaaaaaaaaaaaaaaaa", '{"$gt": ""}', ""])
def test_after_must_be_an_object_id(raw):
    with pytest.raises(Invalid) as caught:
        q(after=raw)
    assert caught.value.field == "after"


def test_after_is_read_case_insensitively():
    assert q(after="65F0AAAAAAAAAAAAAAAAAAAA").after == ObjectId("65f0aaaaaaaaaaaaaaaaaaaa")


# --- bounds, projection, next_params ---


def test_bounds_are_inclusive_and_combine_with_after():
    after = ObjectId()
    query = q(begin="2020-01-01T00:00", end="1577923200000", after=str(after))
    assert query.bounds() == {
        "createdAt": {"$gte": NEW_YEAR, "$lte": NEW_YEAR + timedelta(days=1)},
        "_id": {"$gt": after},
    }
    assert q(**{"from": "0"}).bounds() == {"createdAt": {"$gte": datetime(1970, 1, 1, tzinfo=UTC)}}
    assert q(to="0").bounds() == {"createdAt": {"$lte": datetime(1970, 1, 1, tzinfo=UTC)}}
    assert q().bounds() == {}


def test_projection_is_none_for_whole_documents_or_keeps_only_the_named_fields():
    # Whole documents: the entity layer drops ``_readers`` (tests/e2e checks it never shows).
    assert q().projection() is None
    assert projection(None) is None
    assert q(only="name,b.c").projection() == {"_id": 1, "name": 1, "b.c": 1}
    assert q(only="_id").projection() == {"_id": 1}


def test_next_params_carry_limit_only_and_bounds():
    last = ObjectId()
    assert q().next_params(last_id=last) == {"after": str(last), "limit": "10000"}
    query = q(limit="5", offset="3", only="a,b.c", begin="1000", end="2000", after=str(ObjectId()))
    assert query.next_params(last_id=last) == {
        "after": str(last),
        "limit": "5",
        "only": "a,b.c",
        "from": "1000",
        "to": "2000",
    }


@pytest.mark.parametrize("millis", ["2198351869457", "1567285200001", "-35184015521351", "0"])
def test_next_params_keep_bounds_to_the_millisecond(millis):
    # Float arithmetic on timestamps would shift some bounds by a millisecond, dropping the
    # entities created exactly at ``to`` from every page after the first.
    query = q(**{"from": millis, "to": millis})
    params = query.next_params(ObjectId())
    assert params["from"] == params["to"] == millis
    again = q(**{k: v for k, v in params.items() if k in ("from", "to")})
    assert again.bounds() == query.bounds()
