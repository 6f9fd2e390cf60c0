"""Access-log lines never carry a token or session id."""

from __future__ import annotations

import logging

from app.logs import RedactSecrets, redact


def test_redact_hides_token_and_sid_values():
    line = '127.0.0.1 - "GET /socket.io/?EIO=3&transport=websocket&token=eyJ.abc.def HTTP/1.1" 101'
    assert "eyJ.abc.def" not in redact(line)
    assert "token=***" in redact(line)
    assert redact("/x?sid=secret&a=1") == "/x?sid=***&a=1"
    assert redact("/api/v1/orders?limit=5") == "/api/v1/orders?limit=5"


def test_filter_rewrites_uvicorn_access_record_arguments():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/socket.io/?EIO=4&token=eyJ.secret", "1.1", 101), None,
    )  # fmt: skip
    assert RedactSecrets().filter(record)
    assert "eyJ.secret" not in record.getMessage()
