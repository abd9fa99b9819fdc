"""A throwaway Redis server for the Redis journal tests (Debian's `redis-server`, which scripts/setup.sh installs as
root): loopback only, on a free port, its append-only file in a temporary directory, so a restart keeps the data.
Skips only where no `redis-server` is installed (with CI=true that is a failure, as for PostgreSQL)."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


class RedisServer:
    """One `redis-server` process that can be stopped and started again on the same port and data."""

    def __init__(self, directory: Path) -> None:
        self.dir, self.port = directory, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def up(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]
        log = open(self.dir / "redis.log", "a")
        self.proc = subprocess.Popen(["redis-server", *args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not _answers(self.port):
            assert self.proc.poll() is None, (self.dir / "redis.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "redis-server did not answer within 30 s"
            time.sleep(0.05)

    def down(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis flushes its append-only file and exits
            self.proc.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_server():
    """A RedisServer of the requesting module's own (restarting it disturbs no other module)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no redis-server installed: scripts/setup.sh installs it (as root)", pytrace=False)
        pytest.skip("no redis-server installed: apt-get install redis-server")
    directory = Path(tempfile.mkdtemp(prefix="slowai-redis-"))
    server = RedisServer(directory)
    server.up()
    try:
        yield server
    finally:
        server.down()
        shutil.rmtree(directory, ignore_errors=True)
