"""TLS material for the wire (issue 19.1): a directory made by `shoal certs init DIR`.

    DIR/ca.pem       the cluster CA certificate (every side trusts only it)
    DIR/ca.key       the CA key (mode 0600; only `shoal certs` needs it)
    DIR/node.pem     the node certificate (server and client auth; SANs: the hosts given;
                     the node serves it on its gRPC port and, as HTTPS, on its HTTP port)
    DIR/node.key     (mode 0600)
    DIR/client.pem   a client certificate (client auth)
    DIR/client.key   (mode 0600)

`TlsFiles` names one identity's files; `Wire` reads them when it makes a channel or a port,
and a node's port re-reads them when they change (certificates reload without a restart).
Making the files is client/certs.py; this module only reads.
"""
from __future__ import annotations

import dataclasses
import pathlib


class TlsError(Exception):
    """A TLS file is missing or unreadable; the message names it."""


@dataclasses.dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path

    @classmethod
    def from_dir(cls, directory: str | pathlib.Path, identity: str) -> TlsFiles:
        """identity: "node" or "client" (the file names `shoal certs init` writes)."""
        root = pathlib.Path(directory)
        return cls(root / "ca.pem", root / f"{identity}.pem", root / f"{identity}.key")

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(CA certificate, certificate chain, private key) as PEM bytes; TlsError naming a bad file."""
        found = []
        for path in (self.ca, self.cert, self.key):
            try:
                found.append(path.read_bytes())
            except OSError as exc:
                raise TlsError(f"TLS file {path}: {exc.strerror or exc} (make them with `shoal certs init DIR`)") \
                    from None
        return found[0], found[1], found[2]

    def version(self) -> tuple[float, ...]:
        """Changes when any of the files is replaced or rewritten (for reloading)."""
        try:
            return tuple(path.stat().st_mtime_ns for path in (self.ca, self.cert, self.key))
        except OSError:
            return ()


def pair_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """The key is the certificate's (a rotation writes the two files one after the other)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(serialization.Encoding.DER, spki)
                == key.public_key().public_bytes(serialization.Encoding.DER, spki))
