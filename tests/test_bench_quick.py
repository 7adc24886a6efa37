"""The benchmark's quick mode runs end to end and prints every row with a number.

Timings are not asserted: the machine is shared and figures are noisy; the point is
that the benchmark cannot rot (a renamed route, a changed store API or a broken worker
start makes this fail).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REAL_REDIS_URL, data_file

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"\d[\d,]*(\.\d+)?")

ROUTES = [
    "song (one song)",
    "gaps (50 rows)",
    "velocity (50 rows)",
    "trends month",
    "trends quarter",
    "stats",
    "bustouts",
    "debut-songs",
]
ONCE = [
    "two busy processes at once, speed of each / one alone, median of 1",
    "ingest 1 worker, batches of 200",
    "ingest 1 worker, batches of 1000",
    "ingest 2 workers, batches of 200",
    "ingest 2 workers, batches of 1000",
    "ingest 2 workers / 1 worker, batches of 200, same round",
    "ingest 2 workers / 1 worker, batches of 1000, same round",
    "workers alone, draining 3,542 queued events in jobs of 200, 1 worker (events/s)",
    "workers alone, draining 3,542 queued events in jobs of 200, 2 workers (events/s)",
    "workers alone, 2 workers / 1 worker, same round",
    "CPU us/event, publisher + workers + Redis, 1 worker, batches of 200",
    "CPU us/event, publisher + workers + Redis, 2 workers, batches of 200",
    "publisher alone (validate, log, enqueue), batches of 1000",
    "ingest 1 worker, batches of 1000, no event log in the publisher",
    "publisher alone without the event log, batches of 1000",
    "ingest job-per-event baseline (1 worker, 60 events)",
    "ingest speed-up, best 1-worker batched / job-per-event",
    "in process, worst route",
    "over HTTP, worst route",
    "seed-style per-song loop (ORM query per song)",
    "seed-style loop with lazy ORM loading",
    "one window-function query, indexed",
    "statsworker gaps in process p50",
    "speed-up vs seed loop (x)",
    "speed-up vs lazy loop (x)",
    "speed-up vs window query (x)",
    "performances loaded",
    "load rate through SetlistStore.apply (events/s)",
    "Redis bytes per performance, INFO used_memory",
    "Redis bytes per performance, sum of MEMORY USAGE",
    "Redis bytes per video, sum of MEMORY USAGE",
]


def _rows(stdout: str) -> dict[str, list[list[str]]]:
    rows: dict[str, list[list[str]]] = {}
    for line in stdout.splitlines():
        if not line.startswith("| ") or line.startswith("| measurement"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.setdefault(cells[0], []).append(cells[1:])
    return rows


@pytest.mark.timeout(600)
def test_quick_benchmark_prints_every_row_with_a_number(tmp_path: Path) -> None:
    data_file("grateful_dead_setlists.csv")
    env = {**os.environ, "STATSWORKER_REDIS_URL": REAL_REDIS_URL}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = _rows(proc.stdout)
    for label in ROUTES:
        assert len(rows.get(label, [])) == 2, f"{label!r}: in process and HTTP rows expected"
    for label in ONCE:
        assert label in rows, f"missing row {label!r}\n{proc.stdout}"
    assert any(label.startswith("Redis bytes per video, INFO") for label in rows)
    for label, found in rows.items():
        if label.startswith("== "):
            continue
        for cells in found:
            assert any(NUMBER.search(c) for c in cells), f"row {label!r} has no number: {cells}"
    assert "ingest state check" in proc.stdout and "MISMATCH" not in proc.stdout
    assert "DISAGREES" not in proc.stdout, proc.stdout


@pytest.mark.timeout(300)
def test_the_publisher_log_benchmark_runs_on_both_logs_and_both_readings(tmp_path: Path) -> None:
    data_file("grateful_dead_setlists.csv")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "publish_log.py"),
            *("--events", "600", "--runs", "1", "--lines"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "publisher with the SQLite log, batches of 1000",
        "publisher with the PostgreSQL log, batches of 1000",
        "JSON Lines read straight, SQLite log, batches of 1000",
        "JSON Lines followed, SQLite log, batches of 1000",
    ]
    assert all(re.search(r": \d[\d,]* events/s", line) for line in lines), proc.stdout
