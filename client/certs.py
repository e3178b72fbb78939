"""Make the TLS files of a cluster (issue 19.1): a CA, a node certificate and a client certificate.

`init(DIR, hosts)` writes the layout wire/tls.py reads (ca.pem/ca.key, node.pem/node.key,
client.pem/client.key), keys with mode 0600, and refuses to overwrite an existing CA.
`issue(DIR, identity, hosts)` signs a fresh certificate and key for "node" or "client" with
the existing CA (rotation: nodes re-read their files without a restart). Keys are ECDSA
P-256; the CA lives 10 years, the others 1 year. The node certificate serves and dials
(server and client auth) and names every host it is reached by (DNS names and IP
addresses, plus localhost and 127.0.0.1). Built on `cryptography` (its x509 tutorial).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
IDENTITIES = ("node", "client")


class CertsError(Exception):
    """The directory cannot be used (a CA exists already, or none to sign with)."""


def init(directory: str | pathlib.Path, hosts: Sequence[str] = ()) -> list[pathlib.Path]:
    """Create DIR with a new CA, a node and a client certificate; return the files written."""
    root = pathlib.Path(directory)
    if (root / "ca.pem").exists():
        raise CertsError(f"{root / 'ca.pem'} exists: a new CA would lock out every node that trusts the old one "
                         "(use `shoal certs issue` to renew a certificate)")
    root.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal cluster CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(key, hashes.SHA256()))
    written = [_write_key(root / "ca.key", key), _write(root / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))]
    for identity in IDENTITIES:
        written += issue(root, identity, hosts)
    return written


def issue(directory: str | pathlib.Path, identity: str, hosts: Sequence[str] = ()) -> list[pathlib.Path]:
    """Sign a new certificate and key for `identity` ("node" or "client") with DIR's CA."""
    if identity not in IDENTITIES:
        raise CertsError(f"identity must be one of {', '.join(IDENTITIES)}, got {identity!r}")
    root = pathlib.Path(directory)
    try:
        ca = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((root / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CertsError(f"no CA to sign with in {root} ({exc}): run `shoal certs init {root}` first") from None
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if identity == "node" else [])
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"shoal {identity}")]))
               .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if identity == "node":
        builder = builder.add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return [_write_key(root / f"{identity}.key", key),
            _write(root / f"{identity}.pem", cert.public_bytes(serialization.Encoding.PEM))]


def _names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> pathlib.Path:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return _write(path, pem, mode=0o600)


def _write(path: pathlib.Path, data: bytes, mode: int = 0o644) -> pathlib.Path:
    """tmp + rename, so a node reloading its files never reads half of one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path
