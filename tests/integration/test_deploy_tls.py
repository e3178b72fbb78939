"""Issue 19.8 with TLS: the container files' TLS parts that run without a Docker engine, run for real.

- The compose `certs` service's script, run by `sh` with the volumes' paths moved under a
  temporary directory and the real `shoal` command: it makes the CA and certificates,
  copies the files nodes and clients read (keys stay 0600, ca.key stays behind), and a
  second run keeps the CA.
- The image's HEALTHCHECK command, taken from the Dockerfile with its port moved to a real
  HttpServer's: 0 against a ready plain port without SHOAL_TLS_DIR and against a ready
  HTTPS port with it (verified by ca.pem at 127.0.0.1), non-zero for plaintext to the
  HTTPS port and for a port that is not ready.
- The Kubernetes certificate (the manifest's `shoal certs init` names, wildcards included):
  a gRPC mutual-TLS call and an HTTPS handshake to 127.0.0.1 that check a pod's DNS name
  succeed, and one for a name it does not hold fails.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import pathlib
import shlex
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import yaml
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shoal.client.certs import init
from shoal.client.wire.channels import Wire
from shoal.client.wire.tls import TlsFiles
from shoal.node.http.server import HttpServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
IMAGE_HOME = "/var/lib/shoal"   # the compose volumes' mount points live under it
TIMEOUT_S = 30.0


def health_check_code() -> str:
    """The Python the Dockerfile's HEALTHCHECK runs (`python -c CODE`)."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK"))
    argv = json.loads(line[line.index("CMD") + 3:])
    assert argv[:2] == ["python", "-c"]
    return str(argv[2])


def test_compose_certs_script_makes_the_tls_files_once(tmp_path: pathlib.Path) -> None:
    """Run the certs service's command with /var/lib/shoal moved to tmp_path, twice."""
    certs = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["certs"]
    script = certs["command"][0].replace("$$", "$").replace(IMAGE_HOME, str(tmp_path))
    for mount in certs["volumes"]:
        pathlib.Path(mount.split(":")[1].replace(IMAGE_HOME, str(tmp_path))).mkdir(parents=True)
    env = {"PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path)}
    first = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    tls_dir, ca_dir = tmp_path / "tls", tmp_path / "ca"
    assert sorted(p.name for p in tls_dir.iterdir()) == ["ca.pem", "client.key", "client.pem", "node.key", "node.pem"]
    assert all((tls_dir / key).stat().st_mode & 0o777 == 0o600 for key in ("node.key", "client.key"))
    ca = (ca_dir / "ca.pem").read_bytes()
    second = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "wrote" not in second.stdout and (ca_dir / "ca.pem").read_bytes() == ca == (tls_dir / "ca.pem").read_bytes()


class _Probed:
    """A /readyz whose answer the test sets."""

    def __init__(self) -> None:
        self.ready = True

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/readyz", self.readyz)
        return app


async def _health_check(port: str, tls_dir: pathlib.Path | None) -> int:
    code = health_check_code()
    assert code.count(":9400/readyz") == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    if tls_dir is not None:
        env["SHOAL_TLS_DIR"] = str(tls_dir)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code.replace(":9400/", f":{port}/"), env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await asyncio.wait_for(proc.wait(), TIMEOUT_S)


@contextlib.asynccontextmanager
async def _servers(probed: _Probed, tls: TlsFiles) -> AsyncIterator[tuple[str, str]]:
    """(plain port, HTTPS port) of two HttpServers on 127.0.0.1 serving `probed`."""
    plain, https = HttpServer(probed.app(), "127.0.0.1:0"), HttpServer(probed.app(), "127.0.0.1:0", tls)
    await plain.start()
    try:
        await https.start()
        try:
            yield plain.address.rsplit(":", 1)[1], https.address.rsplit(":", 1)[1]
        finally:
            await https.stop()
    finally:
        await plain.stop()


def test_image_health_check_asks_readyz_over_http_or_https(tmp_path: pathlib.Path) -> None:
    """The HEALTHCHECK's exit code against a plain and an HTTPS port, ready and not."""
    init(tmp_path, [])
    probed = _Probed()

    async def run() -> None:
        async with _servers(probed, TlsFiles.from_dir(tmp_path, "node")) as (plain, https):
            assert await _health_check(plain, None) == 0
            assert await _health_check(https, tmp_path) == 0
            assert await _health_check(https, None) != 0       # plaintext to the HTTPS port
            probed.ready = False
            assert await _health_check(https, tmp_path) != 0   # 503

    asyncio.run(run())


def kubernetes_hosts() -> list[str]:
    """The --host names of the `shoal certs init` the manifest's header tells the operator to run."""
    text = (DOCKER / "k8s" / "shoal.yaml").read_text()
    line = next(line for line in text.splitlines() if line.startswith("#   shoal certs init"))
    words = shlex.split(line.removeprefix("#   "))
    return [words[at + 1] for at, word in enumerate(words) if word == "--host"]


def grpc_health(port: int, tls_dir: pathlib.Path, name: str) -> bool:
    """A health Check over mutual TLS to 127.0.0.1 that verifies the server certificate for `name`."""
    ca, cert, key = TlsFiles.from_dir(tls_dir, "client").read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials,
                             options=[("grpc.ssl_target_name_override", name)]) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return False
    return True


def https_handshake(port: str, tls_dir: pathlib.Path, name: str) -> bool:
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=name):
            return True
    except ssl.SSLCertVerificationError:
        return False


def test_kubernetes_wildcard_certificate_passes_grpc_and_https_checks(tmp_path: pathlib.Path) -> None:
    """The manifest's certificate names, checked by gRPC (peers, clients) and Python ssl (the HTTPS port)."""
    hosts = kubernetes_hosts()
    assert any(host.startswith("*.") for host in hosts)
    init(tmp_path, hosts)
    pods = ["shoal-voter-0.shoal-voter.default.svc.cluster.local", "shoal-data-1.shoal-data.default.svc.cluster.local"]
    stranger = "shoal-voter-0.elsewhere.default.svc.cluster.local"
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = Wire(tls=TlsFiles.from_dir(tmp_path, "node")).add_port(server, "127.0.0.1:0")
    server.start()
    try:
        assert all(grpc_health(port, tmp_path, pod) for pod in pods)
        assert not grpc_health(port, tmp_path, stranger)
    finally:
        server.stop(grace=None).wait()

    async def run() -> None:
        https = HttpServer(_Probed().app(), "127.0.0.1:0", TlsFiles.from_dir(tmp_path, "node"))
        await https.start()
        try:
            https_port = https.address.rsplit(":", 1)[1]
            for pod in pods:
                assert await asyncio.to_thread(https_handshake, https_port, tmp_path, pod)
            assert not await asyncio.to_thread(https_handshake, https_port, tmp_path, stranger)
        finally:
            await https.stop()

    asyncio.run(run())
