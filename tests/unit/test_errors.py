"""Every API error: its status, machine code, tags and the envelope it renders to."""

from __future__ import annotations

import pytest

from app import errors
from app.errors import APIError, ErrorCode

KINDS = [
    (errors.BadRequest, 400, ErrorCode.BAD_REQUEST, ["error_bad_request"]),
    (errors.Unauthorized, 401, ErrorCode.UNAUTHORIZED, ["error_unauthorized"]),
    (errors.Forbidden, 403, ErrorCode.FORBIDDEN, ["error_credentials", "error_forbidden"]),
    (errors.NotFound, 404, ErrorCode.NOT_FOUND, ["error_not_found"]),
    (errors.MethodNotAllowed, 405, ErrorCode.METHOD_NOT_ALLOWED, ["error_method_not_allowed"]),
    (errors.Conflict, 409, ErrorCode.CONFLICT, ["error_conflict"]),
    (errors.ResumeExpired, 410, ErrorCode.RESUME_EXPIRED, ["error_resume_expired"]),
    (errors.PreconditionFailed, 412, ErrorCode.PRECONDITION_FAILED, ["error_precondition_failed"]),
    (errors.TooLarge, 413, ErrorCode.TOO_LARGE, ["error_too_large"]),
    (
        errors.KeyReused,
        422,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ["error_idempotency_key_reused"],
    ),
    (
        errors.UnsupportedMediaType,
        415,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ["error_unsupported_media_type"],
    ),
    (errors.Internal, 500, ErrorCode.INTERNAL, ["error_internal"]),
    (errors.Unavailable, 503, ErrorCode.UNAVAILABLE, ["error_unavailable"]),
    (errors.QueryTimeout, 504, ErrorCode.QUERY_TIMEOUT, ["error_query_timeout"]),
    (errors.RequestTimeout, 408, ErrorCode.REQUEST_TIMEOUT, ["error_request_timeout"]),
]


@pytest.mark.parametrize(("kind", "status", "code", "tags"), KINDS)
def test_envelope(kind, status, code, tags):
    error = kind()
    assert isinstance(error, APIError)
    assert error.status == status
    assert error.body() == {
        "success": False,
        "code": str(status),
        "error": code.value,
        "message": kind.default_message,
        "tags": tags,
    }
    assert error.body("req-1")["requestId"] == "req-1"
    assert str(kind("custom")) == kind("custom").body()["message"] == "custom"


def test_every_subclass_is_covered():
    covered = {kind for kind, *_ in KINDS} | {errors.Invalid, errors.TooManyRequests}
    assert set(APIError.__subclasses__()) == covered
    assert {code for *_, code, _ in KINDS} | {
        ErrorCode.INVALID,
        ErrorCode.TOO_MANY_REQUESTS,
    } == set(ErrorCode)


def test_seed_messages():
    assert errors.Unauthorized().body()["message"] == "Unauthorized"
    assert errors.Forbidden().body()["message"] == "Forbidden"
    assert errors.NotFound().body()["message"] == "Not Found"


def test_invalid_names_the_field():
    error = errors.Invalid("from", "expected a time")
    assert error.field == "from"
    assert isinstance(error, errors.APIError) and error.status == 400
    assert error.body() == {
        "success": False,
        "code": "400",
        "error": "INVALID",
        "message": "from: expected a time",
        "tags": ["error_invalid"],
    }


def test_too_many_requests_says_when_to_retry():
    error = errors.TooManyRequests(retry_after=7)
    assert error.status == 429 and error.headers == {"Retry-After": "7"}
    assert error.body()["error"] == "TOO_MANY_REQUESTS"
    assert error.body()["tags"] == ["error_too_many_requests"]
    assert errors.TooManyRequests(retry_after=0).headers == {"Retry-After": "1"}


def test_unavailable_says_when_to_retry():
    assert errors.Unavailable().headers == {"Retry-After": "5"}
    assert errors.Unavailable(retry_after=2).headers == {"Retry-After": "2"}


def test_plain_errors_carry_no_headers_and_no_request_id():
    error = errors.NotFound("No entity")
    assert error.headers == {}
    assert "requestId" not in error.body() and "requestId" not in error.body("")
