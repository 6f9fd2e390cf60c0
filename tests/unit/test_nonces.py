"""Request ids and write nonces: unique within a process and across forked ones."""

from __future__ import annotations

import os

from app.nonces import Nonces


def test_values_are_unique_and_share_the_process_prefix():
    nonces = Nonces(4, 1)
    values = [nonces.next() for _ in range(10_000)]
    assert len(set(values)) == len(values)
    assert len({v[:8] for v in values}) == 1
    assert all(len(v) >= 9 for v in values)


def test_a_fixed_width_counter_keeps_every_value_the_same_length():
    ids = Nonces(8, 16)
    assert {len(ids.next()) for _ in range(100)} == {32}


def test_a_forked_child_draws_a_prefix_of_its_own():
    nonces = Nonces(8, 16)
    parent = nonces.next()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first value, then leave at once
        os.write(writer, nonces.next().encode())
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 64).decode()
    os.close(reader)
    os.waitpid(pid, 0)
    assert child[:16] != parent[:16]
    assert child[16:] == f"{1:016x}"  # its counter starts again
