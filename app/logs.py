"""Logging set-up for ``python -m app``: credentials never reach the logs."""

from __future__ import annotations

import logging
import re

_SECRET_PARAM = re.compile(r"([?&](?:token|sid)=)[^&\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the values of ``token=`` and ``sid=`` query parameters hidden."""
    return _SECRET_PARAM.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """Hides ``?token=`` (used by Socket.IO v2 clients that cannot send headers) in log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):  # websocket handshakes log to the latter
        logging.getLogger(name).addFilter(RedactSecrets())
