"""Real servers that larger installs use (PostgreSQL), started by the tests on loopback and stopped after."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.stack import free_port

PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), default=Path("/usr/lib/postgresql/15/bin"))


def _as_postgres(*command: str) -> list[str]:
    # PostgreSQL refuses to run as root; CI and developers' machines run the tests as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def _pg_tool(name: str) -> str:
    found = shutil.which(name) or (str(PG_BIN / name) if (PG_BIN / name).exists() else None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is missing: `make test` installs the postgresql package")
    return found


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields its SQLAlchemy URL (asyncpg)."""
    folder = Path(tempfile.mkdtemp(prefix="callserver-pg-"))
    data, sockets = folder / "data", folder / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    run = lambda *c: subprocess.run(_as_postgres(*c), check=True, capture_output=True)  # noqa: E731
    run(_pg_tool("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(
        _pg_tool("pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
        "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
        "start",
    )  # fmt: skip
    try:
        run(_pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "callserver")
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/callserver"
    finally:
        run(_pg_tool("pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def coturn(secret: str) -> Iterator[str]:
    """A coturn TURN server on 127.0.0.1 with TURN REST API credentials; yields its `turn:` URL."""
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn's turnserver is missing: `make test` installs the coturn package")
    folder = Path(tempfile.mkdtemp(prefix="callserver-turn-"))
    port = free_port()
    relay_ports = free_port()
    server = subprocess.Popen(
        [
            binary, "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=127.0.0.1",
            f"--listening-port={port}", "--relay-ip=127.0.0.1", f"--min-port={relay_ports}",
            f"--max-port={relay_ports + 20}", "--allow-loopback-peers", "--use-auth-secret",
            f"--static-auth-secret={secret}", "--realm=callserver.test", f"--pidfile={folder / 'pid'}",
            f"--log-file={folder / 'log'}", "--simple-log", f"--userdb={folder / 'users.db'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _listening_udp(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start: {(folder / 'log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"turn:127.0.0.1:{port}?transport=udp"
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _listening_udp(port: int) -> bool:
    wanted = f":{port:04X} "
    with open("/proc/net/udp") as table:
        return any(wanted in line.split("00000000:0000")[0] for line in table)


class RedisServer:
    """Debian's redis-server on 127.0.0.1, nothing saved to disk; `stop()` and `start()` it on one port."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: `make test` installs the redis-server package")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.folder), "--logfile", str(self.folder / "log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.folder / 'log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def _answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A throwaway Redis on loopback (no RDB, no AOF), stopped at teardown."""
    folder = Path(tempfile.mkdtemp(prefix="callserver-redis-"))
    server = RedisServer(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
