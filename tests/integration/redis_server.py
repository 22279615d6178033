"""A private ``redis-server`` on a free loopback port, for tests that must not share the
machine's Redis (queues, locks, flushes) or that run where none answers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis


def answers(port: int) -> bool:
    """Whether a Redis server answers PING on 127.0.0.1:``port``."""
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@contextmanager
def private_redis(workdir: Path, timeout: float = 30.0) -> Iterator[int]:
    """Start ``redis-server`` (no persistence) in ``workdir`` and yield its port; stopped on
    exit. Fails the test when the binary is missing or the server does not answer."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(exe).exists():
        pytest.fail("redis-server not found: install Debian's redis-server package")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--save", "", "--appendonly", "no", "--dir", str(workdir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while not answers(port):
            if time.monotonic() > deadline:
                pytest.fail(f"the private redis-server did not answer within {timeout} s")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
