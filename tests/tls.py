"""A test certificate authority, and servers on 127.0.0.1 to check what requests carried.

The CA, its server certificate (for 127.0.0.1 and localhost) and a client
certificate are made with the ``cryptography`` package in a temporary folder.
The proxies are a few lines of sockets: an HTTP forward proxy and a SOCKS5
server, each recording where it was asked to go.
"""

from __future__ import annotations

import datetime
import ipaddress
import select
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RELAY_SECONDS = 20.0  # the longest a proxied connection is relayed


@dataclass(frozen=True)
class CertAuthority:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # Server certificates of the same CA that must fail: one for another host name
    # only ("other.example"), one for 127.0.0.1 that has expired.
    wrong_host_cert: Path
    expired_cert: Path
    other_key: Path  # the key of both


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_ca(folder: Path) -> CertAuthority:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("crawler test CA"))
          .issuer_name(_name("crawler test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))

    def issue(name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName], *,
              key: ec.EllipticCurvePrivateKey | None = None, expired: bool = False,
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(_name(name))
                   .issuer_name(ca.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now - datetime.timedelta(hours=1) if expired
                                    else now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = issue("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    client, client_key = issue("crawler test client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    wrong_host, other_key = issue("other.example", ExtendedKeyUsageOID.SERVER_AUTH,
                                  [x509.DNSName("other.example")])
    expired, _ = issue("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        key=other_key, expired=True)
    pem = serialization.Encoding.PEM
    paths = CertAuthority(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                          folder / "client.pem", folder / "client.key",
                          folder / "wrong-host.pem", folder / "expired.pem",
                          folder / "other.key")
    paths.wrong_host_cert.write_bytes(wrong_host.public_bytes(pem))
    paths.expired_cert.write_bytes(expired.public_bytes(pem))
    _write_key(other_key, paths.other_key)
    paths.ca_cert.write_bytes(ca.public_bytes(pem))
    paths.server_cert.write_bytes(server.public_bytes(pem))
    paths.client_cert.write_bytes(client.public_bytes(pem))
    _write_key(server_key, paths.server_key)
    _write_key(client_key, paths.client_key)
    return paths


def server_context(ca: CertAuthority, *, ask_client_cert: bool = False,
                   require_client_cert: bool = False, cert: Path | None = None,
                   ) -> ssl.SSLContext:
    """A server's TLS context: its certificate is ``cert`` (of ``ca.other_key``: the
    wrong host's, or the expired one) when given, else the good one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if cert is None:
        context.load_cert_chain(ca.server_cert, ca.server_key)
    else:
        context.load_cert_chain(cert, ca.other_key)
    if ask_client_cert or require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        context.load_verify_locations(ca.ca_cert)
    return context


def read_head(conn: socket.socket) -> bytes | None:
    """A request's head (and whatever came with it) as a proxy reads it; None when the
    client closes first. 64 KiB at most."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        data = conn.recv(65536)
        if not data:
            return None
        head += data
    return head


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes, for at most RELAY_SECONDS."""
    import time

    end = time.monotonic() + RELAY_SECONDS
    sockets = [a, b]
    while time.monotonic() < end:
        readable, _, _ = select.select(sockets, [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            (b if sock is a else a).sendall(data)


@dataclass
class Proxy:
    """An HTTP forward proxy (absolute-form GET, and CONNECT) or a SOCKS5 server."""

    kind: str  # "http" or "socks5"
    targets: list[str] = field(default_factory=list)  # where clients asked to go
    heads: list[bytes] = field(default_factory=list)  # request heads seen (http, not CONNECT)
    tls: ssl.SSLContext | None = None  # an https:// proxy (http kind only)

    def start(self) -> str:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        port = self._listener.getsockname()[1]
        scheme = "socks5h" if self.kind == "socks5" else "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{port}"

    def stop(self) -> None:
        self._done.set()

    def _serve(self) -> None:
        with self._listener:
            while not self._done.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                handler = self._socks if self.kind == "socks5" else self._http
                threading.Thread(target=handler, args=(conn,), daemon=True).start()

    def _http(self, conn: socket.socket) -> None:
        if self.tls is not None:
            conn.settimeout(5)
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()  # a client that did not trust us
                return
        with conn:
            conn.settimeout(5)
            head = read_head(conn)
            if head is None:
                return
            line, _, rest = head.partition(b"\r\n")
            method, target, _ = line.split(b" ", 2)
            if method == b"CONNECT":
                self.targets.append(target.decode())
                host, port = target.decode().rsplit(":", 1)
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=5)
                except OSError:
                    return  # a host it cannot reach: the tunnel is dropped, unanswered
                with upstream:
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    _relay(conn, upstream)
                return
            self.heads.append(head)
            url = target.decode()
            self.targets.append(url)
            hostport, _, path = url.split("://", 1)[1].partition("/")
            host, port = hostport.rsplit(":", 1)
            request = (method + b" /" + path.encode() + b" HTTP/1.1\r\n" + rest.replace(
                b"\r\nConnection: keep-alive", b"").replace(b"Proxy-Connection: keep-alive\r\n",
                                                            b""))
            request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            with socket.create_connection((host, int(port)), timeout=5) as upstream:
                upstream.sendall(request)
                _relay(conn, upstream)  # the answer, until the origin closes

    def _socks(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            _version, count = conn.recv(2)
            conn.recv(count)
            conn.sendall(b"\x05\x00")  # no authentication
            _, command, _, kind = conn.recv(4)
            if kind == 3:
                host = conn.recv(conn.recv(1)[0]).decode()
            elif kind == 1:
                host = socket.inet_ntoa(conn.recv(4))
            else:
                conn.sendall(b"\x05\x08\x00\x01" + b"\0" * 6)
                return
            (port,) = struct.unpack("!H", conn.recv(2))
            self.targets.append(f"{host}:{port}")
            if command != 1:
                conn.sendall(b"\x05\x07\x00\x01" + b"\0" * 6)
                return
            with socket.create_connection((host, port), timeout=5) as upstream:
                conn.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1")
                             + struct.pack("!H", 0))
                _relay(conn, upstream)
