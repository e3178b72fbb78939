"""Packaging: committed stubs match the .proto files; the wheel holds only the shoal namespace."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_stubs_are_up_to_date() -> None:
    """Regenerating the stubs with the pinned grpcio-tools gives exactly the committed files."""
    proc = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_wheel_installs_only_the_shoal_namespace(tmp_path: pathlib.Path) -> None:
    """`pip wheel .` builds a wheel whose packages all live under shoal/, importable from outside the repo."""
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("shoal-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"shoal"}, top
    assert "shoal/__init__.py" not in names        # a namespace, no top-level package
    for needed in ("shoal/client/wire/pb/data_pb2.py", "shoal/node/storage/shard_store.py",
                   "shoal/client/py.typed", "shoal/chaos/scenarios/kill-leader.toml"):
        assert needed in names, needed
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    probe = ("import sys; sys.path.insert(0, %r); import shoal.client, shoal.node.node, shoal.chaos; "
             "print(shoal.client.__file__)" % str(target))
    out = subprocess.run([sys.executable, "-c", probe], cwd="/", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target)), out.stdout
