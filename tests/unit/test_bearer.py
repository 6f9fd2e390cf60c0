"""Reading ``Authorization`` headers: only ``Bearer <one token>`` is a credential."""

from __future__ import annotations

import pytest

from app.auth import bearer
from app.errors import Unauthorized


@pytest.mark.parametrize(
    ("header", "token"),
    [(None, None), ("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  tok ", "tok")],
)
def test_bearer_tokens_are_read(header, token):
    assert bearer(header) == token


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer ", "Basic dXNlcjpw", "Token abc", "Bearer a b", "abc"]
)
def test_anything_else_is_unauthorized(header):
    with pytest.raises(Unauthorized):
        bearer(header)
