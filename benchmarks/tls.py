"""A throw-away certificate authority and server certificate for 127.0.0.1, for https runs.

Made with the ``openssl`` command line in a folder the benchmark deletes
afterwards: a CA (``ca.pem``, handed to every client as its only trusted CA)
and a server certificate for ``127.0.0.1`` and ``localhost`` signed by it
(``server.pem`` and ``server.key``, for nginx). EC P-256 keys, valid two days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL_TIMEOUT = 60.0

SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


class CertificateError(RuntimeError):
    """The certificates could not be made (openssl missing or failing)."""


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate every client trusts
    cert: Path  # the server's certificate
    key: Path  # the server's private key


def _openssl(binary: str, *args: str, cwd: Path) -> None:
    try:
        done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=OPENSSL_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CertificateError(f"openssl {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {done.stderr.strip()[-300:]}")


def make_certificates(folder: Path) -> Certificates:
    """A fresh CA and a server certificate for 127.0.0.1 signed by it, in ``folder``."""
    binary = shutil.which("openssl")
    if binary is None:
        raise CertificateError("the openssl command is missing (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(binary, "req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=crawler benchmark throw-away CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl(binary, "req", *curve, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "server.ext").write_text(SERVER_EXTENSIONS, encoding="utf-8")
    _openssl(binary, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-sha256",
             "-extfile", "server.ext", cwd=folder)
    for name in ("ca.pem", "server.pem"):
        (folder / name).chmod(0o644)
    return Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
