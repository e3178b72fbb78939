"""Make the TLS files of a cluster (issue 19.1): a CA, a node certificate and a client certificate.

`init(DIR, hosts)` writes the layout wire/tls.py reads (ca.pem/ca.key, node.pem/node.key,
client.pem/client.key), keys with mode 0600, and refuses when any of those files exists
(naming them): it never overwrites a CA, a key or a certificate.
`issue(DIR, identity, hosts)` signs a fresh certificate and key for "node" or "client" with
the existing CA (rotation: nodes re-read their files without a restart). Keys are ECDSA
P-256; the CA lives 10 years, the others 1 year. The node certificate serves and dials
(server and client auth) and names every host it is reached by (DNS names and IP
addresses, plus localhost and 127.0.0.1). A host must be an IP literal or a DNS name
(labels of 1..63 letters, digits, '-' or '_', 253 characters at most; a first label `*` is a
wildcard): `check_host`. `issue` tells a missing CA (run init) from one that is there but
unusable (init would refuse it: the message says what is wrong with which file).
Built on `cryptography` (its x509 tutorial).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
IDENTITIES = ("node", "client")
FILES = ("ca.key", "ca.pem", "node.key", "node.pem", "client.key", "client.pem")   # what init writes
HOST_CHARS_MAX = 253
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class CertsError(Exception):
    """The directory cannot be used (a CA exists already, or none to sign with)."""


def init(directory: str | pathlib.Path, hosts: Sequence[str] = ()) -> list[pathlib.Path]:
    """Create DIR with a new CA, a node and a client certificate; return the files written."""
    root = pathlib.Path(directory)
    _check_hosts(hosts)
    existing = [str(root / name) for name in FILES if os.path.lexists(root / name)]
    if existing:
        raise CertsError(f"{', '.join(existing)} {'exists' if len(existing) == 1 else 'exist'}: init never "
                         "overwrites (a new CA would lock out every node that trusts the old one; use `shoal certs "
                         "issue` to renew a certificate, or give init an empty directory)")
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
    _check_hosts(hosts)
    ca, ca_key = _load_ca(root)
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


def check_host(host: str) -> str | None:
    """Why `host` cannot be a --host (a DNS name, a `*.` wildcard name or an IP literal); None if it can."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
        return None
    except ValueError:
        pass
    if not host:
        return "an empty host"
    if len(host) > HOST_CHARS_MAX:
        return f"a host name of {len(host)} characters (at most {HOST_CHARS_MAX})"
    for position, label in enumerate(host.split(".")):
        if position == 0 and label == "*" and "." in host:
            continue
        if not 1 <= len(label) <= 63:
            return f"{host!r} has a label of {len(label)} characters (1..63)"
        if not _LABEL.fullmatch(label):
            return f"{host!r} is not a DNS name or IP address (label {label!r}: letters, digits, '-' and '_' only)"
    return None


def _check_hosts(hosts: Sequence[str]) -> None:
    for host in hosts:
        problem = check_host(host)
        if problem is not None:
            raise CertsError(f"bad host: {problem}")


def _load_ca(root: pathlib.Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """DIR's CA certificate and key; CertsError saying what is wrong with which file (and what to do)."""
    cert_path, key_path = root / "ca.pem", root / "ca.key"
    if not os.path.lexists(cert_path) and not os.path.lexists(key_path):
        raise CertsError(f"no CA to sign with in {root}: run `shoal certs init {root}` first")
    made = "made by `shoal certs init`"
    if not os.path.lexists(cert_path):
        raise CertsError(f"{cert_path} is missing (and {key_path} exists): restore it; `shoal certs init` "
                         "refuses a directory that holds a CA key")
    try:
        ca = x509.load_pem_x509_certificate(cert_path.read_bytes())
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except OSError as exc:
        raise CertsError(f"cannot read {cert_path}: {exc.strerror or exc}") from None
    except ValueError:
        raise CertsError(f"{cert_path} is not a CA certificate {made}: not a PEM certificate") from None
    except x509.ExtensionNotFound:
        raise CertsError(f"{cert_path} is not a CA certificate {made}: no CA basic constraints") from None
    if not constraints.ca:
        raise CertsError(f"{cert_path} is not a CA certificate {made}: it is a leaf certificate")
    if not os.path.lexists(key_path):
        raise CertsError(f"{key_path} is missing: sign in the directory `shoal certs init` made, which holds "
                         f"the key of {cert_path}")
    try:
        ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise CertsError(f"cannot read {key_path}: {exc.strerror or exc}") from None
    except TypeError:
        raise CertsError(f"{key_path} is not a CA key {made}: it is encrypted with a password") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertsError(f"{key_path} is not a CA key {made}: not a PEM private key") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"{key_path} is not a CA key {made}: not an elliptic-curve key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if ca.public_key().public_bytes(*spki) != ca_key.public_key().public_bytes(*spki):
        raise CertsError(f"{key_path} is not the key of {cert_path}")
    return ca, ca_key


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
