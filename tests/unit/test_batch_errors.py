"""How a shared insert's failure becomes each insert's own (``app.storage``)."""

from __future__ import annotations

from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteConcernError

from app.storage import _per_document


def test_a_batch_error_becomes_what_each_insert_would_have_raised():
    exc = BulkWriteError(
        {
            "writeErrors": [
                {"index": 1, "code": 11000, "errmsg": "dup", "keyPattern": {"email": 1}},
                {"index": 2, "code": 121, "errmsg": "rejected"},
                {"index": 9, "code": 121, "errmsg": "not in the batch"},
            ],
            "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication"}],
        }
    )
    failed = _per_document(exc, 4)
    assert isinstance(failed[1], DuplicateKeyError)
    assert failed[1].details == {"index": 1, "code": 11000, "errmsg": "dup",
                                 "keyPattern": {"email": 1}}  # fmt: skip
    assert type(failed[2]).__name__ == "WriteError" and failed[2].code == 121
    assert isinstance(failed[0], WriteConcernError) and isinstance(failed[3], WriteConcernError)
    assert sorted(failed) == [0, 1, 2, 3]
