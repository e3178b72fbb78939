"""Issue 16 point 3 (values) against a real node: `shoal get` output is unambiguous and
`shoal put` / `shoal load` store it back as the same value.

Method: one real node (test_cli_load's `node` fixture) and the typer app in-process; what
the CLI stored is read back through the Python client, so types are checked, not just text.
The example is the str "base64:aGk=" (it printed like the bytes b"hi" before); the variants
are a dict holding both, at depth, through put and through load, and values written by the
Python client that JSON cannot show faithfully.
"""
from __future__ import annotations

import json
from pathlib import Path

from shoal.client.local import LocalCluster
from test_cli_load import node, shoal  # noqa: F401  (node is a fixture)


def test_issue16_str_like_base64_round_trips_as_str(node: LocalCluster) -> None:  # noqa: F811
    """The example: put '"base64:aGk="' stores a str, get prints it as that str, and the printed line
    put back stores the same str; bytes b"hi" print differently, as {"$bytes": "aGk="}."""
    assert shoal(node, "put", "events", "s", '"base64:aGk="').exit_code == 0
    with node.client() as client:
        assert client.get("events", "s") == "base64:aGk="
        client.put("events", "b", b"hi")
    printed = shoal(node, "get", "events", "s").stdout
    assert printed == '"base64:aGk="\n'
    assert shoal(node, "get", "events", "b").stdout == '{"$bytes": "aGk="}\n'
    assert shoal(node, "put", "events", "s2", printed.strip()).exit_code == 0
    with node.client() as client:
        assert client.get("events", "s2") == "base64:aGk=" and type(client.get("events", "s2")) is str


def test_issue16_bytes_round_trip_as_bytes(node: LocalCluster) -> None:  # noqa: F811
    """Bytes written by the Python client print as {"$bytes": ...}; putting that line back stores bytes."""
    blob = bytes(range(256))
    with node.client() as client:
        client.put("events", "blob", blob)
    printed = shoal(node, "get", "events", "blob").stdout.strip()
    assert shoal(node, "put", "events", "blob2", printed).exit_code == 0
    with node.client() as client:
        assert client.get("events", "blob2") == blob


def test_issue16_dict_holding_bytes_and_str_round_trips(node: LocalCluster, tmp_path: Path) -> None:  # noqa: F811
    """Variant: one dict holding bytes and the lookalike str, nested, through put, get and load."""
    value = {"raw": b"hi", "text": "base64:aGk=", "deep": [{"b": b"\x00\xff"}, "aGk="]}
    with node.client() as client:
        client.put("events", "mixed", value)
    printed = shoal(node, "get", "events", "mixed").stdout
    assert json.loads(printed) == {"raw": {"$bytes": "aGk="}, "text": "base64:aGk=",
                                   "deep": [{"b": {"$bytes": "AP8="}}, "aGk="]}
    assert shoal(node, "put", "events", "mixed2", "-", stdin=printed).exit_code == 0
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"id": "mixed3", **json.loads(printed)}) + "\n")
    assert shoal(node, "load", "events", str(path)).exit_code == 0
    with node.client() as client:
        assert client.get("events", "mixed2") == value
        assert client.get("events", "mixed3") == {"id": "mixed3", **value}


def test_issue16_get_refuses_values_json_would_change(node: LocalCluster) -> None:  # noqa: F811
    """A stored dict shaped like the bytes object, or with an int key, is one error line, never a
    line that would read back as another value; a put of a bad bytes object stores nothing."""
    with node.client() as client:
        client.put("events", "shape", {"$bytes": "aGk="})
        client.put("events", "intkey", {1: "a"})
    for key, reason in (("shape", 'holds a dict whose one key is "$bytes"'), ("intkey", "holds a dict key 1 (int)")):
        result = shoal(node, "get", "events", key)
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.startswith(f"error: the value of key {key!r} {reason}"), result.stderr
    refused = shoal(node, "put", "events", "bad", '{"$bytes": "not base64!"}')
    assert refused.exit_code == 1 and "is not standard base64" in refused.stderr
    with node.client() as client:
        assert client.get("events", "bad") is None
