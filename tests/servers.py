"""Real servers that larger installs use (PostgreSQL), started by the tests on loopback and stopped after."""

from __future__ import annotations

import atexit
import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def _run_as_postgres(*command: str) -> None:
    subprocess.run(_as_postgres(*command), check=True, capture_output=True)


def _owned_folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    return folder


_INITIALISED: dict[str, Path] = {}  # one initdb's data directory per test process, copied for each cluster


def _initialised() -> Path:
    """An empty cluster's data directory, made on first use: copying it costs about half an initdb."""
    if "data" not in _INITIALISED:
        folder = _owned_folder("callserver-pg-initdb-")
        atexit.register(shutil.rmtree, folder, True)
        _run_as_postgres(
            _pg_tool("initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        _INITIALISED["data"] = folder / "data"
    return _INITIALISED["data"]


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (a server and data directory of its own); yields its
    SQLAlchemy URL (asyncpg)."""
    folder = _owned_folder("callserver-pg-")
    data, sockets = folder / "data", folder / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(sockets, "postgres")
    port = free_port()
    run = _run_as_postgres
    run("cp", "-a", str(_initialised()), str(data))
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
def coturn(secret: str, relay_ip: str = "127.0.0.1") -> Iterator[str]:
    """A coturn TURN server on 127.0.0.1 with TURN REST API credentials; yields its `turn:` URL (UDP; the
    same port takes TURN over TCP: `?transport=tcp`). Relays from `relay_ip`, to any peer, loopback too."""
    folder = Path(tempfile.mkdtemp(prefix="callserver-turn-"))
    port = free_port()
    relay_ports = free_port()
    options = [
        "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=127.0.0.1",
        f"--listening-port={port}", f"--relay-ip={relay_ip}", f"--min-port={relay_ports}",
        f"--max-port={relay_ports + 20}", "--allow-loopback-peers", "--use-auth-secret",
        f"--static-auth-secret={secret}", "--realm=callserver.test", f"--pidfile={folder / 'pid'}",
        f"--log-file={folder / 'log'}", "--simple-log", f"--userdb={folder / 'users.db'}",
    ]  # fmt: skip
    with _turnserver(options, folder, port):
        yield f"turn:127.0.0.1:{port}?transport=udp"


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files; `spki` pins it for Chromium
    (`--ignore-certificate-errors-spki-list`: this key is trusted, every other check still holds)."""

    cert: Path
    key: Path
    spki: str


def self_signed_certificate(folder: Path, name: str) -> Certificate:
    """An ECDSA P-256 certificate for `name` and 127.0.0.1, valid for a day, written into `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Certificate(cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode())


@dataclass(frozen=True)
class TurnServer:
    """A running turnserver: its `turn:` URL (UDP; `?transport=tcp` on the same port) and process id;
    with TLS on, its `turns:` URL and the certificate it presents."""

    url: str
    pid: int
    tls_url: str | None = None
    certificate: Certificate | None = None

    @property
    def tcp_url(self) -> str:
        return self.url.replace("?transport=udp", "?transport=tcp")


# The sample's options that name an install (addresses, ports, certificates, logging): a test sets its own.
_INSTALL_OPTIONS = {
    "static-auth-secret", "listening-port", "tls-listening-port", "listening-ip", "relay-ip",
    "external-ip", "min-port", "max-port", "cert", "pkey", "syslog", "no-stdout-log", "log-file",
    "pidfile", "userdb", "allowed-peer-ip",
}  # fmt: skip


@contextmanager
def hardened_coturn(
    config: Path,
    secret: str,
    relay_ip: str = "127.0.0.1",
    allowed_peers: tuple[str, ...] = (),
    tls: bool = False,
) -> Iterator[TurnServer]:
    """coturn run from the sample config `config` (docs/coturn.conf), on 127.0.0.1 with `secret`: a copy
    keeps its policy lines as they are and replaces only what names an install; `allowed_peers` are
    `allowed-peer-ip` lines (callserver's own address where it is private). With `tls`, it also listens
    for TURN over TLS with a self-signed certificate (the sample's TLS versions and ciphers hold)."""
    folder = Path(tempfile.mkdtemp(prefix="callserver-turn-"))
    port = free_port()
    relay_ports = free_port()
    certificate, tls_port = (
        (self_signed_certificate(folder, "turn.shop.example"), free_port()) if tls else (None, 0)
    )
    tls_options = (
        [f"tls-listening-port={tls_port}", f"cert={certificate.cert}", f"pkey={certificate.key}"]
        if certificate is not None
        else ["no-tls"]
    )
    kept = [
        line
        for line in config.read_text().splitlines()
        if line.split("=", 1)[0].strip() not in _INSTALL_OPTIONS
    ]
    overrides = [
        f"static-auth-secret={secret}", "listening-ip=127.0.0.1", f"listening-port={port}",
        f"relay-ip={relay_ip}", f"min-port={relay_ports}", f"max-port={relay_ports + 20}",
        *tls_options, "no-dtls", f"log-file={folder / 'log'}", f"pidfile={folder / 'pid'}",
        f"userdb={folder / 'users.db'}", *(f"allowed-peer-ip={peer}" for peer in allowed_peers),
    ]  # fmt: skip
    (folder / "turnserver.conf").write_text("\n".join([*kept, *overrides]) + "\n")
    with _turnserver(["-c", str(folder / "turnserver.conf")], folder, port, tls_port) as pid:
        tls_url = f"turns:127.0.0.1:{tls_port}?transport=tcp" if certificate is not None else None
        yield TurnServer(f"turn:127.0.0.1:{port}?transport=udp", pid, tls_url, certificate)


@contextmanager
def _turnserver(options: list[str], folder: Path, port: int, tls_port: int = 0) -> Iterator[int]:
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn's turnserver is missing: `make test` installs the coturn package")
    server = subprocess.Popen([binary, *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (_listening_udp(port) and (not tls_port or _listening_tcp(tls_port))):
            if server.poll() is not None or time.monotonic() > deadline:
                log = folder / "log"
                raise RuntimeError(
                    f"turnserver did not start: {log.read_text()[-2000:] if log.exists() else ''}"
                )
            time.sleep(0.05)
        yield server.pid
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _listening_udp(port: int) -> bool:
    wanted = f":{port:04X} "
    with open("/proc/net/udp") as table:
        return any(wanted in line.split("00000000:0000")[0] for line in table)


def _listening_tcp(port: int) -> bool:
    wanted = f":{port:04X} "
    with open("/proc/net/tcp") as table:
        return any(wanted in line.split("00000000:0000")[0] and line.split()[3] == "0A" for line in table)


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
