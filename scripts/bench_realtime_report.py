"""What the realtime benchmark measured, and the table it prints."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Write:
    seq: int
    sent: float  # wall clock (time.time()), comparable with the workers' receipts
    answered: float
    ok: bool


@dataclass
class Measured:
    subscribers: int
    rate: float
    load: float  # 1-minute load average at the start
    raw_latencies: list[float] = field(default_factory=list)  # seconds
    raw_round_trips: list[float] = field(default_factory=list)
    rss_before: int = 0  # KiB
    rss_after: int = 0
    connected: int = 0
    writes: list[Write] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # one per subscriber process
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core
    client: str = "lean"  # the subscribers' Socket.IO client


def percentiles(values: list[float]) -> tuple[int, float, float, float]:
    """(n, p50, p99, max) of seconds, in milliseconds, by nearest rank."""
    if not values:
        return 0, math.nan, math.nan, math.nan
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return len(ordered), rank(50), rank(99), ordered[-1] * 1000


def _deliveries(m: Measured, ok: dict[int, Write]) -> tuple[dict[tuple[int, int, int], float], int]:
    """Receive time per (process, client, seq), first receipt only; and the duplicate count."""
    delivered: dict[tuple[int, int, int], float] = {}
    duplicates = 0
    for process, result in enumerate(m.results):
        for client, seq, at in result["receipts"]:
            key = (process, client, seq)
            if key in delivered:
                duplicates += 1
            elif seq in ok:
                delivered[key] = at
    return delivered, duplicates


def render(m: Measured, per_write: bool = False) -> str:
    ok = {w.seq: w for w in m.writes if w.ok}
    delivered, duplicates = _deliveries(m, ok)
    last_at: dict[int, float] = {}
    for (_, _, seq), at in delivered.items():
        last_at[seq] = max(at, last_at.get(seq, at))
    first_sent = min(w.sent for w in m.writes)
    span = max(delivered.values()) - first_sent if delivered else math.nan
    send_span = max(w.sent for w in m.writes) - first_sent
    expected = len(ok) * m.connected
    dropped = sum(r["disconnects"] for r in m.results)
    rows = [
        ("raw change stream: insert_one ack -> watcher", m.raw_latencies),
        ("raw insert_one round trip", m.raw_round_trips),
        (
            "platform: POST response -> each delivery",
            [at - ok[seq].answered for (_, _, seq), at in delivered.items()],
        ),
        (
            "platform: POST sent -> each delivery",
            [at - ok[seq].sent for (_, _, seq), at in delivered.items()],
        ),
        (
            "platform: POST response -> last subscriber",
            [at - ok[seq].answered for seq, at in last_at.items()],
        ),
        ("platform: POST round trip", [w.answered - w.sent for w in ok.values()]),
    ]
    lines = [
        f"Realtime fan-out: {m.connected} subscribers ({m.client} client) in "
        f"{len(m.results)} client processes, "
        f"{len(m.writes)} writes at {m.rate:g}/s to one store",
        "",
        f"{'latency (ms)':<46}{'n':>9}{'p50':>9}{'p99':>9}{'max':>9}",
    ]
    for label, values in rows:
        n, p50, p99, top = percentiles(values)
        lines.append(f"{label:<46}{n:>9}{p50:>9.1f}{p99:>9.1f}{top:>9.1f}")

    cpu = m.cpu
    clients = " + ".join(f"{v:.0%}" for k, v in cpu.items() if k.startswith("client"))
    per_connection = (m.rss_after - m.rss_before) / m.connected
    sent_rate = (len(m.writes) - 1) / send_span if send_span else math.nan
    lines += [
        "",
        f"{'deliveries':<22}{len(delivered):,} of {expected:,} expected "
        f"({expected - len(delivered):,} missing, {duplicates} duplicate, "
        f"{dropped} sockets dropped)",
        f"{'delivered events/s':<22}{len(delivered) / span:,.0f} "
        f"(first write to last delivery: {span:.1f}s)",
        f"{'writes':<22}{len(ok)} ok, {len(m.writes) - len(ok)} failed, sent at {sent_rate:.1f}/s",
        f"{'server RSS':<22}{m.rss_before / 1024:.1f} MiB before, "
        f"{m.rss_after / 1024:.1f} MiB with {m.connected} idle subscribers: "
        f"{per_connection:.1f} KiB per idle connection",
        f"{'CPU while writing':<22}server {cpu['server']:.0%}, SecantusDB {cpu['database']:.0%}, "
        f"subscriber processes {clients}, this script {cpu['bench']:.0%}",
        f"{'(100% = one core)':<22}other processes {cpu['others']:.0%} "
        f"({os.cpu_count()} CPUs, load average {m.load:.1f} at start)",
    ]
    if per_write:
        lines += ["", "POST response -> last subscriber, per write (ms), in order:"]
        latencies = [f"{(last_at[seq] - ok[seq].answered) * 1000:.0f}" for seq in sorted(last_at)]
        lines += [" ".join(latencies[i : i + 20]) for i in range(0, len(latencies), 20)]
    return "\n".join(lines)
