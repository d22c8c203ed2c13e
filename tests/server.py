"""The real Milvus 2.3.5 standalone server with authentication on, for one test session.

`make test` runs pytest inside a private network namespace (scripts/in-netns), so the
server, which binds every interface, is reachable only from the tests. If it cannot
start, the run fails with its log; `MILVUS_AUDIT_SKIP_SERVER=1` skips these tests
for people without the wheel's platform (CI does not set it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT_USER = "root"
ROOT_PASSWORD = "Milvus"
GRPC_PORT = 19530
HEALTH_URL = "http://127.0.0.1:9091/healthz"
START_TIMEOUT_S = 90


@dataclass(frozen=True)
class MilvusServer:
    uri: str
    root_user: str = ROOT_USER
    root_password: str = ROOT_PASSWORD
    # The server's stdout, where the access log (proxy.accessLog.enable=true) lands among its other output.
    access_log: Path | None = None


def _healthy() -> bool:
    try:
        with urllib.request.urlopen(HEALTH_URL, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _server_command() -> list[str]:
    executable = Path(sys.executable).with_name("milvus-server")
    if not executable.exists():
        found = shutil.which("milvus-server")
        if not found:
            pytest.fail("milvus-server is not installed: `pip install --no-deps milvus==2.3.5` "
                        "(make test does this)", pytrace=False)
        executable = Path(found)
    return [str(executable)]


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[MilvusServer]:
    if os.environ.get("MILVUS_AUDIT_SKIP_SERVER") == "1":
        pytest.skip("MILVUS_AUDIT_SKIP_SERVER=1: real-server tests skipped")
    if _healthy():
        pytest.fail("something already answers on 127.0.0.1:9091; refusing to test against a "
                    "server this session did not start", pytrace=False)
    data_dir = Path(tempfile.mkdtemp(prefix="milvus-audit-server-"))
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*_server_command(), "--data", str(data_dir / "data"), "--authorization-enabled", "true",
             "--extra-config", "proxy.accessLog.enable=true"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            log_tail = log_path.read_text(errors="replace")[-4000:]
            pytest.fail(f"the Milvus server did not become healthy (exit {process.poll()}); "
                        f"its log:\n{log_tail}", pytrace=False)
        time.sleep(0.5)
    try:
        yield MilvusServer(uri=f"http://127.0.0.1:{GRPC_PORT}",
                           access_log=data_dir / "data" / "logs" / "milvus-stdout.log")
    finally:
        _stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
