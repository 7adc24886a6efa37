"""Child processes of the benchmark: ``statsworker worker`` and ``statsworker api``."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Worker

STOP_SECONDS = 15.0
"""How long a child may take to stop after SIGTERM before it is killed."""


def statsworker_command() -> list[str]:
    """The console script beside this interpreter, else ``python -m worker.cli``."""
    script = Path(sys.executable).with_name("statsworker")
    if script.exists():
        return [str(script)]
    found = shutil.which("statsworker")
    return [found] if found else [sys.executable, "-m", "worker.cli"]


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Children:
    """Processes started with a private environment, stopped (by pid) when done."""

    def __init__(self, redis_url: str, prefix: str, queue: str, today: dt.date) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="swbench-"))
        self.env = {
            **os.environ,
            "STATSWORKER_REDIS_URL": redis_url,
            "STATSWORKER_KEY_PREFIX": prefix,
            "STATSWORKER_QUEUE": queue,
            "STATSWORKER_TODAY": today.isoformat(),
            "STATSWORKER_DATABASE_URL": f"sqlite:///{self.tmp / 'events.db'}",
            "STATSWORKER_LOG_FORMAT": "text",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``statsworker ARGS`` with its output in a log file of the temp dir."""
        log = self.tmp / f"child-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*statsworker_command(), *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def check_alive(self) -> None:
        """Raise with the child's log when one of them has exited."""
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"child {proc.args} exited with {proc.returncode}:\n{tail}")

    def stop_newest(self) -> None:
        """SIGTERM the child started last (a warm shutdown for RQ) and wait for it."""
        proc = self.procs.pop()
        self.logs.pop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        """SIGTERM every child (a warm shutdown for RQ), then SIGKILL the stragglers."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_workers(children: Children, queue: Queue, n: int, timeout: float = 60.0) -> None:
    """Start workers until ``n`` are registered on ``queue``; wait for them."""
    for _ in range(n - Worker.count(queue=queue)):
        children.start("worker")
    deadline = time.monotonic() + timeout
    while Worker.count(queue=queue) < n:
        children.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} worker(s) did not register within {timeout:.0f} s")
        time.sleep(0.05)


def stop_workers(children: Children, queue: Queue, n: int, timeout: float = 60.0) -> None:
    """Stop the newest workers until ``n`` are registered on ``queue``; wait for them."""
    while Worker.count(queue=queue) > n and children.procs:
        children.stop_newest()
    deadline = time.monotonic() + timeout
    while Worker.count(queue=queue) > n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers did not leave the registry within {timeout:.0f} s")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process ``pid`` has used so far; None where ``/proc``
    does not say (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_api(children: Children, timeout: float = 60.0) -> int:
    """Start ``statsworker api`` on a free port; returns the port once /health answers."""
    port = free_port()
    children.start("api", "--host", "127.0.0.1", "--port", str(port))
    deadline = time.monotonic() + timeout
    while True:
        children.check_alive()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API did not answer on port {port} within {timeout:.0f} s")
        time.sleep(0.1)


def delete_pattern(client: Any, pattern: str) -> int:
    """Delete every key matching ``pattern`` (SCAN, then DEL in slices); returns how many."""
    batch: list[Any] = []
    n = 0
    for key in client.scan_iter(pattern, count=5000):
        batch.append(key)
        if len(batch) >= 1000:
            n += client.unlink(*batch)
            batch = []
    if batch:
        n += client.unlink(*batch)
    return n


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence; ``stop()`` ends it.

    For figures a shared server blurs: INFO memory deltas (other clients' keys come
    and go) and commandstats (other clients' scripts count too).
    """

    def __init__(self, timeout: float = 10.0, wrapper: Sequence[str] = ()) -> None:
        """``wrapper``: a command the server runs under (``valgrind --tool=callgrind``)."""
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="swredis-")
        self.proc = subprocess.Popen(
            [
                *wrapper,
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if wrapper else None,  # valgrind's report at exit
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + timeout
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (by its pid) and remove its directory."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
