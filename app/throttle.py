"""Failed sign-in attempts, counted per login and per client address over a sliding window in
MongoDB (so every server instance sees the same count)."""

from __future__ import annotations

from datetime import timedelta

from pymongo import DESCENDING

from app.clock import now
from app.errors import TooManyRequests
from app.storage import LOGIN_FAILURES, Storage, translated_async

WINDOW_SECONDS = 300
MAX_FAILURES = 10


def _keys(login: str, address: str) -> list[str]:
    return [f"login:{login[:256]}", f"addr:{address}"]


class LoginThrottle:
    def __init__(self, storage: Storage):
        self.failures = storage.system(LOGIN_FAILURES)

    async def check(self, login: str, address: str) -> None:
        """Raise 429 while either key has ``MAX_FAILURES`` failures inside the window."""
        moment = now()
        window_start = moment - timedelta(seconds=WINDOW_SECONDS)
        wait = 0.0
        async with translated_async():
            for key in _keys(login, address):
                # The oldest of the last MAX_FAILURES failures: the window frees when it leaves.
                edge = (
                    await self.failures.find({"key": key, "at": {"$gt": window_start}}, {"at": 1})
                    .sort("at", DESCENDING)
                    .skip(MAX_FAILURES - 1)
                    .limit(1)
                    .to_list()
                )
                if edge:
                    frees_at = edge[0]["at"] + timedelta(seconds=WINDOW_SECONDS)
                    wait = max(wait, (frees_at - moment).total_seconds())
        if wait > 0:
            raise TooManyRequests(
                "Too many failed sign-in attempts; try again later", retry_after=int(wait) + 1
            )

    async def failed(self, login: str, address: str) -> None:
        moment = now()
        async with translated_async():
            await self.failures.insert_many(
                [{"key": key, "at": moment} for key in _keys(login, address)]
            )

    async def succeeded(self, login: str) -> None:
        async with translated_async():
            await self.failures.delete_many({"key": _keys(login, "")[0]})
