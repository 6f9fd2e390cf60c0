"""Unique strings made cheaply: a random prefix per process, then a counter.

Good where a value must differ from every other one (request ids, the nonce of each write's
``_by``), not where it must be unguessable: no system call per value, unlike ``secrets``.
A forked child draws a prefix of its own, so two processes never share one."""

from __future__ import annotations

import itertools
import os


class Nonces:
    def __init__(self, prefix_bytes: int, width: int) -> None:
        self._prefix_bytes = prefix_bytes
        self._format = f"{{}}{{:0{width}x}}"
        self.restart()
        os.register_at_fork(after_in_child=self.restart)

    def restart(self) -> None:
        self._prefix = os.urandom(self._prefix_bytes).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return self._format.format(self._prefix, next(self._counter))
