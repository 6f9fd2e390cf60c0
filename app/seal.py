"""Seals: a MAC keyed from the deployment's secret, one key per purpose, for the opaque values
the server hands out and must recognise as its own (list cursors, resume tokens). Every
instance of a deployment shares ``APP_SECRET``, so each reads the others' values."""

from __future__ import annotations

import hashlib
import hmac

SEAL_BYTES = 16


class Seal:
    def __init__(self, secret: str, purpose: str):
        self._key = hashlib.sha256(f"{purpose}:".encode() + secret.encode()).digest()

    def of(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:SEAL_BYTES]

    def matches(self, payload: bytes, seal: bytes) -> bool:
        return hmac.compare_digest(seal, self.of(payload))
