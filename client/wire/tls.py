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
`read()` checks them before anything binds or connects, so a bad file is one TlsError
naming it (missing, unreadable, not PEM, key not the certificate's, certificate not signed
by ca.pem, expired or not yet valid) rather than a failed bind or handshake later.
Making the files is client/certs.py; this module only reads.
"""
from __future__ import annotations

import dataclasses
import datetime
import pathlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509


class TlsError(Exception):
    """A TLS file is missing, unreadable or unusable; the message names it."""


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
        """(CA certificate, certificate chain, private key) as PEM bytes, checked (`check`);
        TlsError naming a bad file."""
        found = []
        for path in (self.ca, self.cert, self.key):
            try:
                found.append(path.read_bytes())
            except OSError as exc:
                raise TlsError(f"TLS file {path}: {exc.strerror or exc} (make them with `shoal certs init DIR`)") \
                    from None
        self.check(found[0], found[1], found[2])
        return found[0], found[1], found[2]

    def version(self) -> tuple[float, ...]:
        """Changes when any of the files is replaced or rewritten (for reloading)."""
        try:
            return tuple(path.stat().st_mtime_ns for path in (self.ca, self.cert, self.key))
        except OSError:
            return ()

    def check(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
              now: datetime.datetime | None = None) -> None:
        """TlsError naming the file unless: ca.pem and the certificate file hold PEM certificates,
        the key file a PEM private key that is the certificate's, the certificate is signed by
        a ca.pem certificate (directly or through the chain after it in its file), and every
        certificate on that path is valid `now` (default: the current time)."""
        cas = _certificates(self.ca, ca_pem)
        chain = _certificates(self.cert, cert_pem)
        key = _private_key(self.key, key_pem)
        if not _same_public_key(chain[0], key):
            raise TlsError(f"TLS files {self.cert} and {self.key} do not belong together "
                           "(the key is not the certificate's)")
        path = _signing_path(chain, cas)
        if path is None:
            raise TlsError(f"TLS file {self.cert} is not signed by {self.ca} (issue it with the same CA: "
                           f"`shoal certs issue {self.cert.parent} {self.cert.stem}`, or use that CA's ca.pem)")
        now = now or datetime.datetime.now(datetime.timezone.utc)
        for certificate in reversed(path):   # the CA first: an expired CA is the cause, not its leaves
            _check_validity(self.ca if certificate in cas else self.cert, certificate, now)


def _same_public_key(cert: x509.Certificate, key: Any) -> bool:
    from cryptography.hazmat.primitives import serialization
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki))


def _certificates(path: pathlib.Path, pem: bytes) -> list[x509.Certificate]:
    from cryptography import x509
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TlsError(f"TLS file {path} is not a PEM certificate") from None


def _private_key(path: pathlib.Path, pem: bytes) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:   # a password-protected key
        raise TlsError(f"TLS file {path} is an encrypted key (shoal needs it without a password)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(f"TLS file {path} is not a PEM private key") from None


def _signing_path(chain: list[x509.Certificate], cas: list[x509.Certificate]) -> list[x509.Certificate] | None:
    """[leaf, intermediates..., the ca.pem certificate that signed them]; None when no CA signed the chain."""
    path = [chain[0]]
    for _ in chain:
        anchor = _issuer(path[-1], cas)
        if anchor is not None:
            return [*path, anchor]
        step = _issuer(path[-1], [c for c in chain[1:] if c not in path])
        if step is None:
            return None
        path.append(step)
    return None


def _issuer(certificate: x509.Certificate, candidates: list[x509.Certificate]) -> x509.Certificate | None:
    from cryptography.exceptions import InvalidSignature
    for candidate in candidates:
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def _check_validity(path: pathlib.Path, certificate: x509.Certificate, now: datetime.datetime) -> None:
    if now < certificate.not_valid_before_utc:
        raise TlsError(f"TLS file {path} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
                       "(check this host's clock)")
    if now > certificate.not_valid_after_utc:
        renew = "a new CA from `shoal certs init`" if path.name == "ca.pem" else f"`shoal certs issue {path.parent} {path.stem}`"
        raise TlsError(f"TLS file {path} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                       f"(renew it: {renew})")
