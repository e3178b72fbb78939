"""Issue 19.9: the README's configuration reference names every NodeConfig field.

Each field is named whole, in backquotes, in the first cell of a table row.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

from shoal.node.config import NodeConfig

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_every_node_setting_is_in_the_readme_reference() -> None:
    text = README.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    named = set()
    for row in rows:
        cell = row.split("|")[1]
        named.update(re.findall(r"`([a-z_]+)`", cell))
    missing = [f.name for f in dataclasses.fields(NodeConfig) if f.name not in named]
    assert not missing, f"README configuration tables lack: {missing}"
