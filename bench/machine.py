"""How much two busy processes slow each other down on this machine.

Two cores that each run a process at full speed whether or not the other is busy make
two workers worth two; cores that share their execution units (hyperthreads of one
physical core, or a host that gives the machine less than two cores' worth) make each
process slower as soon as both are busy. The ingest rows depend on which: their CPU
time per event rises whenever every core is busy, whoever made it so.

:func:`pair_speed` runs the same pure-Python loop alone and then twice at once, in
fresh processes, and compares the CPU time each copy takes (``time.process_time``
around the loop only, so start-up is left out and waiting for a core is not counted).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

SPIN = """
import sys, time
def spin(n):
    table, total = {}, 0
    for i in range(n):
        table[i & 1023] = i
        total += table.get((i * 7) & 1023, 0)
    return total
n, start = int(sys.argv[1]), float(sys.argv[2])
spin(10_000)
time.sleep(max(0.0, start - time.time()))
began = time.process_time()
spin(n)
print(time.process_time() - began)
"""
"""Dictionary stores and lookups in a loop: interpreter work, as most of the
publisher's and the workers' is."""

START_DELAY = 0.3
"""Seconds allowed for the copies to start up before they begin together."""


def spin_seconds(iterations: int, copies: int) -> list[float]:
    """CPU seconds the loop of ``iterations`` took in each of ``copies`` processes
    started together."""
    start = time.time() + START_DELAY
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SPIN, str(iterations), repr(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(copies)
    ]
    found = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"the spin loop failed with {proc.returncode}")
        found.append(float(out.strip()))
    return found


def pair_speed(iterations: int) -> float:
    """Speed of each of two copies running at once, against one running alone (1.0:
    no slower; 0.5: the two share one core's worth of work). The loop runs alone before
    and after the pair, so that a drift of the machine's speed weighs on both sides."""
    alone = spin_seconds(iterations, 1) + spin_seconds(iterations, 1)
    together = spin_seconds(iterations, 2)
    return statistics.mean(alone) / statistics.mean(together)
