"""A real Redis server (Debian's `redis-server`) for one test session: a free loopback port,
a password, no persistence; stopped by PID. If it cannot start, the run fails loudly.

`make test` installs the package when it is missing and runs pytest inside a private network
namespace (scripts/in-netns), so the server is reachable only from the tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process; `kill()` (SIGKILL) and `start()` again keep its port and password."""

    def __init__(self) -> None:
        self.executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.executable):
            pytest.fail("redis-server is not installed: `apt-get install -y redis-server` "
                        "(make test does this)", pytrace=False)
        self.port = _free_port()
        self.password = secrets.token_hex(16)
        self.directory = Path(tempfile.mkdtemp(prefix="milvus-audit-redis-"))
        self.log_path = self.directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> RedisServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
                 "--save", "", "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start (exit {self.process.poll()}); its log:\n"
                            f"{self.log_path.read_text(errors='replace')[-3000:]}", pytrace=False)
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                received = b""
                while b"+PONG" not in received:
                    chunk = connection.recv(64)
                    if not chunk:
                        return False
                    received += chunk
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, nothing saved."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def client(self) -> object:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
