"""Issue 19.1: mutual TLS on every gRPC listener, with certificates from `shoal certs init`.

A real 3-node cluster started with tls=True (LocalCluster makes the files with
client/certs.py and starts every node with SHOAL_TLS_DIR): a client with the cluster's
client certificate works end to end (nodes replicate to each other over TLS too); a
plaintext client, a TLS client without a certificate and one whose certificate comes from
another CA are all refused; a node certificate renewed on disk is served to the next
handshake without a restart. The same cluster's HTTP ports speak HTTPS with the node
certificate (no client certificate asked): /readyz and /metrics answer a client that
trusts only the cluster CA and dials 127.0.0.1 (no SNI sent, so the reload hook must run
without one), plaintext HTTP is refused while the port keeps serving, and the renewed
certificate is served there too.
"""
from __future__ import annotations

import http.client
import json
import pathlib
import socket
import ssl
import urllib.error
import urllib.request

import grpc
import pytest
from cryptography import x509

from shoal.client import ClientConfig, ShoalError
from shoal.client.certs import init, issue
from shoal.client.cli.cluster_cmds import _print_ready as print_ready
from shoal.client.local import LocalCluster
from shoal.client.wire.pb import data_pb2, data_pb2_grpc
from test_cluster_replication import FAST


def cluster_map(channel: grpc.Channel) -> data_pb2.ClusterMap:
    reply: data_pb2.ClusterMap = data_pb2_grpc.DataStub(channel).GetClusterMap(data_pb2.ClusterMapRequest(),
                                                                                 timeout=3)
    return reply


def served_certificate_serial(address: str, tls_dir: pathlib.Path) -> int:
    """The serial of the certificate the node presents in a fresh handshake (as a client with a certificate)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    context.load_cert_chain(tls_dir / "client.pem", tls_dir / "client.key")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def https_certificate_serial(address: str, tls_dir: pathlib.Path) -> int:
    """The serial of the certificate an HTTP port presents to a client without a certificate (verified by the CA)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def https_get(url: str, tls_dir: pathlib.Path) -> tuple[int, str]:
    """(status, body) of a GET that trusts only the cluster CA and presents no client certificate."""
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:   # nosec B310: a loopback test URL
        return response.status, response.read().decode()


def check_https_port(address: str, tls_dir: pathlib.Path) -> None:
    """The HTTP port serves HTTPS to CA-trusting clients without a certificate and refuses plaintext."""
    status, ready = https_get(f"https://{address}/readyz", tls_dir)
    assert status == 200 and json.loads(ready)["ready"] is True
    status, metrics = https_get(f"https://{address}/metrics", tls_dir)
    assert status == 200 and "shoal_shard_replicas" in metrics
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        urllib.request.urlopen(f"http://{address}/readyz", timeout=5)   # nosec B310: plaintext must fail
    with pytest.raises(urllib.error.URLError) as untrusted:               # a client that does not trust the CA
        urllib.request.urlopen(f"https://{address}/healthz", timeout=5)   # nosec B310
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    assert https_get(f"https://{address}/healthz", tls_dir) == (200, "ok\n")   # still serving


def test_mutual_tls_serves_certified_clients_and_refuses_the_others(tmp_path: pathlib.Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with LocalCluster(tmp_path / "c", nodes=3, env=FAST, tls=True) as cluster, cluster.client(timeout_s=15) as client:
        tls_dir = pathlib.Path(cluster.tls_dir)
        assert oct((tls_dir / "node.key").stat().st_mode & 0o777) == "0o600"
        client.create_dataset("kv", shards=2, replication=3)       # replicated between nodes over TLS
        client.put("kv", "k", {"v": 1})
        assert client.get("kv", "k") == {"v": 1}
        address = cluster.addresses[0]
        http_address = cluster.nodes[0].http_address
        assert cluster.http_scheme == "https"
        check_https_port(http_address, tls_dir)
        print_ready(cluster)                                          # what `shoal up --tls` prints
        assert f"dashboard: https://{http_address}/" in capsys.readouterr().out

        with grpc.insecure_channel(address) as plain, pytest.raises(grpc.RpcError):
            cluster_map(plain)
        no_cert = grpc.ssl_channel_credentials(root_certificates=(tls_dir / "ca.pem").read_bytes())
        with grpc.secure_channel(address, no_cert) as anonymous, pytest.raises(grpc.RpcError):
            cluster_map(anonymous)
        init(tmp_path / "other", ["127.0.0.1"])
        foreign = cluster.client(timeout_s=3, config=ClientConfig(tls_dir=str(tmp_path / "other")))
        with foreign, pytest.raises(ShoalError):
            foreign.get("kv", "k")

        before = served_certificate_serial(address, tls_dir)
        assert https_certificate_serial(http_address, tls_dir) == before
        issue(tls_dir, "node", ["127.0.0.1"])                       # rotation: the nodes re-read the files
        renewed = x509.load_pem_x509_certificate((tls_dir / "node.pem").read_bytes()).serial_number
        assert renewed != before and served_certificate_serial(address, tls_dir) == renewed
        assert https_certificate_serial(http_address, tls_dir) == renewed   # the HTTPS port too, no restart
        assert client.get("kv", "k") == {"v": 1}
