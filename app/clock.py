"""The server's clock, at BSON's millisecond precision (what the database keeps)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time at BSON's millisecond precision."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
