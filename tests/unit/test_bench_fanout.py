"""scripts/bench_fanout.py drives the hub's own fan-out path with stand-in transports; a small
run keeps it working as the hub changes (it exits non-zero unless every frame was written)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_fanout.py"


def test_a_small_fan_out_run_writes_every_frame():
    done = subprocess.run(  # noqa: S603 - our own interpreter and script, no shell
        [sys.executable, str(SCRIPT), "--subscribers", "200", "--users", "5", "--changes", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "200 subscribers (5 users), 2 changes: CPU per delivery" in done.stdout
