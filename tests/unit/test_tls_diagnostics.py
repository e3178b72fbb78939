"""TLS diagnostics an operator acceptance pass asked for (faults 6, 12, 14); no cluster.

- 6: every TLS file a node or a client loads is checked when it is loaded (TlsFiles.read,
  before a port is bound or a channel connects): missing, not PEM, key not the
  certificate's, certificate not signed by ca.pem, expired or not yet valid is one error
  naming the file; `shoal node start` and a client command show it as one line.
- 12: a plaintext client facing a TLS node (and the other way round) gets a hint in its
  "cannot reach the cluster" error: the gRPC words seen on real sockets, and one real
  in-process TLS server dialled by a plaintext Client.
- 14: `shoal certs init` refuses a directory holding any file it would write, naming them;
  --host must be a DNS name or IP literal (usage error); `certs issue` with an unusable
  ca.pem says what is wrong with it instead of advising an init that would refuse.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import shutil
import socket
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from shoal.client import Client, ClientConfig, ShoalError
from shoal.client._contact import Contact, tls_hint
from shoal.client.certs import CertsError, check_host, init, issue
from shoal.client.cli import app
from shoal.client.wire.channels import Wire
from shoal.client.wire.tls import TlsError, TlsFiles

ENV = {"SHOAL_CLUSTER": None, "SHOAL_TIMEOUT": None, "SHOAL_TLS_DIR": None, "COLUMNS": "200"}
PLAINTEXT_TO_TLS = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:24407: Socket closed"
TLS_TO_PLAINTEXT = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:24408: Tls handshake "
                    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:"
                    "WRONG_VERSION_NUMBER: Invalid certificate verification context: OK")
FOREIGN_CA = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:24409: Tls handshake failed "
              "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1a000064:ECDSA routines:OPENSSL_internal:BAD_SIGNATURE: "
              "certificate signature failure: OK")


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two complete directories from `shoal certs init`, with different CAs."""
    root = tmp_path_factory.mktemp("cas")
    init(root / "a", ["127.0.0.1"])
    init(root / "b", ["127.0.0.1"])
    return root / "a", root / "b"


def copy(source: Path, target: Path, *names: str) -> Path:
    target.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(source / name, target / name)
    return target


def one_error_line(result: object, code: int = 1) -> str:
    assert result.exit_code == code, result.output   # type: ignore[attr-defined]
    lines = result.stderr.splitlines()                 # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output   # type: ignore[attr-defined]
    return str(lines[0])


def closed_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


# ---- fault 6: checked at load time, one error naming the file ----

def test_good_files_read_for_node_and_client(cas: tuple[Path, Path]) -> None:
    for identity in ("node", "client"):
        ca, cert, key = TlsFiles.from_dir(cas[0], identity).read()
        assert ca.startswith(b"-----BEGIN CERTIFICATE") and b"PRIVATE KEY" in key and cert != ca


@pytest.mark.parametrize(("garbled", "expected"), [
    ("ca.pem", "TLS file {d}/ca.pem is not a PEM certificate"),
    ("node.pem", "TLS file {d}/node.pem is not a PEM certificate"),
    ("node.key", "TLS file {d}/node.key is not a PEM private key"),
])
def test_garbage_file_is_named(cas: tuple[Path, Path], tmp_path: Path, garbled: str, expected: str) -> None:
    directory = copy(cas[0], tmp_path / "d", "ca.pem", "node.pem", "node.key")
    (directory / garbled).write_text("garbage\n")
    with pytest.raises(TlsError) as error:
        TlsFiles.from_dir(directory, "node").read()
    assert str(error.value) == expected.format(d=directory)


def test_missing_file_is_named(cas: tuple[Path, Path], tmp_path: Path) -> None:
    directory = copy(cas[0], tmp_path / "d", "ca.pem", "client.pem")
    with pytest.raises(TlsError, match=f"TLS file {directory}/client.key: No such file"):
        TlsFiles.from_dir(directory, "client").read()


def test_key_of_another_certificate(cas: tuple[Path, Path], tmp_path: Path) -> None:
    directory = copy(cas[0], tmp_path / "d", "ca.pem", "node.pem")
    shutil.copy(cas[0] / "client.key", directory / "node.key")
    with pytest.raises(TlsError, match=f"TLS files {directory}/node.pem and {directory}/node.key do not belong"):
        TlsFiles.from_dir(directory, "node").read()


def test_certificate_of_another_ca(cas: tuple[Path, Path], tmp_path: Path) -> None:
    """The acceptance case: a valid node.pem/node.key pair next to another cluster's ca.pem."""
    directory = copy(cas[0], tmp_path / "d", "node.pem", "node.key")
    shutil.copy(cas[1] / "ca.pem", directory / "ca.pem")
    with pytest.raises(TlsError, match=f"TLS file {directory}/node.pem is not signed by {directory}/ca.pem"):
        TlsFiles.from_dir(directory, "node").read()


def test_expired_and_not_yet_valid(cas: tuple[Path, Path]) -> None:
    files = TlsFiles.from_dir(cas[0], "node")
    pems = [path.read_bytes() for path in (files.ca, files.cert, files.key)]
    now = datetime.datetime.now(datetime.timezone.utc)
    with pytest.raises(TlsError, match=f"TLS file {files.cert} expired on .*renew it: `shoal certs issue {files.cert.parent} node`"):
        files.check(*pems, now=now + datetime.timedelta(days=400))   # the leaf lives a year
    with pytest.raises(TlsError, match=f"TLS file {files.ca} expired on"):
        files.check(*pems, now=now + datetime.timedelta(days=4000))  # ca.pem is checked first (the root cause)
    with pytest.raises(TlsError, match=f"TLS file {files.ca} is not valid before .*clock"):
        files.check(*pems, now=now - datetime.timedelta(days=1))


def test_node_start_names_the_file_before_binding(cas: tuple[Path, Path], tmp_path: Path) -> None:
    """Was: "cannot listen on ADDR: address in use" (garbage ca.pem) or a silent start (another CA)."""
    directory = copy(cas[0], tmp_path / "tls", "node.pem", "node.key")
    shutil.copy(cas[1] / "ca.pem", directory / "ca.pem")
    argv = ["node", "start", "--id", "n1", "--data-dir", str(tmp_path / "n1"), "--listen", closed_address(),
            "--tls-dir", str(directory)]
    line = one_error_line(CliRunner(env=ENV).invoke(app, argv))
    assert line.startswith(f"error: TLS file {directory}/node.pem is not signed by {directory}/ca.pem"), line
    (directory / "ca.pem").write_text("garbage\n")   # a second in-process start: TMPDIR was put back
    line = one_error_line(CliRunner(env=ENV).invoke(app, argv))
    assert line == f"error: TLS file {directory}/ca.pem is not a PEM certificate", line


def test_client_command_names_the_file(cas: tuple[Path, Path], tmp_path: Path) -> None:
    directory = copy(cas[0], tmp_path / "tls", "ca.pem", "client.key")
    (directory / "client.pem").write_text("garbage\n")
    argv = ["--cluster", closed_address(), "--timeout", "1", "--tls-dir", str(directory), "status"]
    line = one_error_line(CliRunner(env=ENV).invoke(app, argv))
    assert line == f"error: TLS file {directory}/client.pem is not a PEM certificate", line


# ---- fault 12: a TLS/plaintext mismatch is named in the unreachable error ----

def test_tls_hint_words() -> None:
    assert tls_hint(PLAINTEXT_TO_TLS, tls=False) == " (the node may require TLS: --tls-dir DIR)"
    assert tls_hint(TLS_TO_PLAINTEXT, tls=True) == " (the node may not use TLS: try without --tls-dir)"
    assert "not be signed by the client's ca.pem" in tls_hint(FOREIGN_CA, tls=True)
    assert tls_hint("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: "
                    "Connection refused", tls=False) == ""
    assert tls_hint(PLAINTEXT_TO_TLS.replace("Socket closed", "Connection refused"), tls=True) == ""
    error = Contact(None, {"h:1": PLAINTEXT_TO_TLS}).error(["h:1"])
    assert error.message.endswith("Socket closed) (the node may require TLS: --tls-dir DIR)")
    assert "may require TLS" not in Contact(None, {"h:1": "no answer within 1.0 s"}).error(["h:1"]).message


def test_plaintext_client_to_tls_server_gets_the_hint(cas: tuple[Path, Path]) -> None:
    """A real gRPC port with the node's TLS files (no service needed: the handshake fails first)."""
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    port = Wire(tls=TlsFiles.from_dir(cas[0], "node")).add_port(server, "127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout_s=2) as client, pytest.raises(ShoalError) as error:
            client.list_datasets()
        assert str(error.value).startswith(f"cannot reach the cluster at 127.0.0.1:{port}")
        assert "(the node may require TLS: --tls-dir DIR)" in str(error.value)
        config = ClientConfig(tls_dir=str(cas[0]))   # the same port with the right files: no hint, it answers
        with Client(f"127.0.0.1:{port}", timeout_s=2, config=config) as client, pytest.raises(ShoalError) as other:
            client.list_datasets()
        assert "may require TLS" not in str(other.value) and "cannot reach" not in str(other.value)
    finally:
        server.stop(0)


# ---- fault 14: certs init / issue refuse clearly ----

def test_init_refuses_any_existing_file(cas: tuple[Path, Path], tmp_path: Path) -> None:
    partial = copy(cas[0], tmp_path / "partial", "node.pem", "node.key")
    before = {name: (partial / name).read_bytes() for name in ("node.pem", "node.key")}
    line = one_error_line(CliRunner(env=ENV).invoke(app, ["certs", "init", str(partial)]))
    assert line.startswith(f"error: {partial}/node.key, {partial}/node.pem exist: init never overwrites"), line
    assert sorted(p.name for p in partial.iterdir()) == ["node.key", "node.pem"]
    assert all((partial / name).read_bytes() == data for name, data in before.items())
    with pytest.raises(CertsError, match=f"^{cas[0]}/ca.key, {cas[0]}/ca.pem, .*{cas[0]}/client.pem exist"):
        init(cas[0])


@pytest.mark.parametrize(("host", "words"), [
    ("", "an empty host"),
    ("bad host!", "'bad host!' is not a DNS name or IP address"),
    ("a" * 300, "a host name of 300 characters (at most 253)"),
    ("a" * 64 + ".example", "has a label of 64 characters (1..63)"),
    ("a..b", "has a label of 0 characters"),
    ("-lead.example", "is not a DNS name or IP address"),
    ("*", "is not a DNS name or IP address"),
])
def test_bad_host_is_a_usage_error(tmp_path: Path, host: str, words: str) -> None:
    for argv in (["certs", "init", str(tmp_path / "new")], ["certs", "issue", str(tmp_path / "new"), "node"]):
        line = one_error_line(CliRunner(env=ENV).invoke(app, [*argv, "--host", host]), code=2)
        assert "Invalid value for '--host'" in line and words in line, line
    assert not (tmp_path / "new").exists()
    with pytest.raises(CertsError, match="bad host"):
        init(tmp_path / "new", [host])


@pytest.mark.parametrize("host", ["node1.example", "*.shoal-voter.default.svc.cluster.local", "voter-1",
                                  "10.0.0.1", "::1", "[fe80::1]", "a" * 63 + ".b", ".".join(["a" * 63] * 3) + ".ab"])
def test_good_hosts(host: str) -> None:
    assert check_host(host) is None


def test_issue_with_an_unusable_ca_says_what_is_wrong(cas: tuple[Path, Path], tmp_path: Path) -> None:
    garbage = tmp_path / "garbtls"
    garbage.mkdir()
    (garbage / "ca.pem").write_text("garbage\n")
    line = one_error_line(CliRunner(env=ENV).invoke(app, ["certs", "issue", str(garbage), "node"]))
    assert line == (f"error: {garbage}/ca.pem is not a CA certificate made by `shoal certs init`: "
                    "not a PEM certificate"), line
    shutil.copy(cas[0] / "node.pem", garbage / "ca.pem")
    with pytest.raises(CertsError, match="ca.pem is not a CA certificate .*: it is a leaf certificate"):
        issue(garbage, "node")
    shutil.copy(cas[0] / "ca.pem", garbage / "ca.pem")     # a deployed TLS dir: ca.pem without its key
    with pytest.raises(CertsError, match=f"{garbage}/ca.key is missing"):
        issue(garbage, "node")
    shutil.copy(cas[1] / "ca.pem", garbage / "ca.key")
    with pytest.raises(CertsError, match=f"{garbage}/ca.key is not a CA key made by .*not a PEM private key"):
        issue(garbage, "node")
    shutil.copy(cas[1] / "ca.key", garbage / "ca.key")
    with pytest.raises(CertsError, match=f"{garbage}/ca.key is not the key of {garbage}/ca.pem"):
        issue(garbage, "node")
    with pytest.raises(CertsError, match=f"no CA to sign with in {tmp_path}/empty: run `shoal certs init"):
        issue(tmp_path / "empty", "node")
