"""The API's errors: one base class, a subclass per status, and the envelope they render to.

Handlers raise these; a single renderer (``app.middleware``) turns any of them into the
seed's envelope ``{"success": false, "code": "404", "error": "NOT_FOUND", ...}``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    INVALID = "INVALID"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    CONFLICT = "CONFLICT"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    TOO_MANY_REQUESTS = "TOO_MANY_REQUESTS"
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    RESUME_EXPIRED = "RESUME_EXPIRED"
    QUERY_TIMEOUT = "QUERY_TIMEOUT"
    PRECONDITION_FAILED = "PRECONDITION_FAILED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"


class APIError(Exception):
    """Base of every error the API answers with; ``status`` and ``code`` pick the envelope."""

    status: ClassVar[int] = 500
    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    tags: ClassVar[tuple[str, ...]] = ("error_internal",)
    default_message: ClassVar[str] = "Internal server error"

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "success": False,
            "code": str(self.status),
            "error": self.code.value,
            "message": self.message,
            "tags": list(self.tags),
        }
        if request_id:
            body["requestId"] = request_id
        return body


class BadRequest(APIError):
    status = 400
    code = ErrorCode.BAD_REQUEST
    tags = ("error_bad_request",)
    default_message = "Bad request"


class Invalid(APIError):
    """A value that is not allowed; the message names the field or parameter."""

    status = 400
    code = ErrorCode.INVALID
    tags = ("error_invalid",)
    default_message = "Invalid value"

    def __init__(self, field: str, problem: str, *, errors: list[dict[str, str]] | None = None):
        self.field = field
        # Every violation found, ``[{"field", "rule", "message"}]`` (store definitions report
        # them all at once); the message repeats the first.
        self.errors = errors
        super().__init__(f"{field}: {problem}")

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        body = super().body(request_id)
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class Unauthorized(APIError):
    status = 401
    code = ErrorCode.UNAUTHORIZED
    tags = ("error_unauthorized",)
    default_message = "Unauthorized"


class Forbidden(APIError):
    status = 403
    code = ErrorCode.FORBIDDEN
    tags = ("error_credentials", "error_forbidden")
    default_message = "Forbidden"


class NotFound(APIError):
    status = 404
    code = ErrorCode.NOT_FOUND
    tags = ("error_not_found",)
    default_message = "Not Found"


class MethodNotAllowed(APIError):
    status = 405
    code = ErrorCode.METHOD_NOT_ALLOWED
    tags = ("error_method_not_allowed",)
    default_message = "Method not allowed"


class Conflict(APIError):
    status = 409
    code = ErrorCode.CONFLICT
    tags = ("error_conflict",)
    default_message = "Conflict"

    def __init__(self, message: str | None = None, *, field: str | None = None):
        self.field = field  # the unique field a duplicate was refused on, when known
        super().__init__(message)


class PreconditionFailed(APIError):
    """``If-Match`` named another revision; the envelope carries the entity as it is now."""

    status = 412
    code = ErrorCode.PRECONDITION_FAILED
    tags = ("error_precondition_failed",)
    default_message = "The entity has changed"

    def __init__(self, message: str | None = None, *, current: dict[str, Any] | None = None):
        self.current = current
        super().__init__(message)

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        body = super().body(request_id)
        if self.current is not None:
            body["current"] = self.current
        return body


class KeyReused(APIError):
    """An ``Idempotency-Key`` sent again with another request (method, path or body)."""

    status = 422
    code = ErrorCode.IDEMPOTENCY_KEY_REUSED
    tags = ("error_idempotency_key_reused",)
    default_message = "This Idempotency-Key was used for a different request"


class TooLarge(APIError):
    status = 413
    code = ErrorCode.TOO_LARGE
    tags = ("error_too_large",)
    default_message = "Request body too large"


class RequestTimeout(APIError):
    status = 408
    code = ErrorCode.REQUEST_TIMEOUT
    tags = ("error_request_timeout",)
    default_message = "The request body did not arrive in time"


class UnsupportedMediaType(APIError):
    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    tags = ("error_unsupported_media_type",)
    default_message = "Content-Type must be application/json"


class TooManyRequests(APIError):
    status = 429
    code = ErrorCode.TOO_MANY_REQUESTS
    tags = ("error_too_many_requests",)
    default_message = "Too many requests"

    def __init__(self, message: str | None = None, *, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


class Internal(APIError):
    pass


class Unavailable(APIError):
    status = 503
    code = ErrorCode.UNAVAILABLE
    tags = ("error_unavailable",)
    default_message = "The database cannot be reached; try again shortly"

    def __init__(self, message: str | None = None, *, retry_after: int = 5):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class DeadlineExceeded(Unavailable):
    """The request's database deadline ran out (the database stops the work too)."""

    def __init__(self, message: str | None = None):
        super().__init__(message or "The database did not answer in time", retry_after=1)


class QueryTimeout(APIError):
    """A list, ``meta`` or filter query that ran past ``QUERY_TIMEOUT_MS``: asking again will
    not help, a narrower filter or an index will."""

    status = 504
    code = ErrorCode.QUERY_TIMEOUT
    tags = ("error_query_timeout",)
    default_message = "The query did not finish in time"


class ResumeExpired(APIError):
    """A realtime resume token the database no longer holds events for."""

    status = 410
    code = ErrorCode.RESUME_EXPIRED
    tags = ("error_resume_expired",)
    default_message = "The resume token is too old; reload by REST and subscribe again"
