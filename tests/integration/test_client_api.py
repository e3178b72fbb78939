"""Issue 16 point 4 through one real node: read-modify-write on a missing key, how
compare_and_set compares values (node/storage/documents.py), argument types.

Method: one node process (LocalCluster, loopback port 0), driven through the public client.
"""
from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shoal.client import ABSENT, Client, InvalidArgumentError
from shoal.client.local import LocalCluster


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with LocalCluster(pathlib.Path(tmp_path_factory.mktemp("api")) / "cluster", nodes=1) as cluster:
        with cluster.client() as client:
            client.create_dataset("api", shards=2, replication=1)
            yield client


def test_issue16_read_modify_write_from_a_missing_key(client: Client) -> None:
    """The idiom `v = get(k); compare_and_set(k, v, f(v))` counts up from a missing key."""
    for _ in range(3):
        value = client.get("api", "counter")
        assert client.compare_and_set("api", "counter", value, (value or 0) + 1)
    assert client.get("api", "counter") == 3


def test_issue16_none_matches_missing_or_stored_none_absent_only_missing(client: Client) -> None:
    """expected=None matches a missing key and a stored None; ABSENT only a missing key; get(default=ABSENT) tells them apart."""
    client.put("api", "null", None)
    assert client.get("api", "null", ABSENT) is None and client.get("api", "gone", ABSENT) is ABSENT
    assert not client.compare_and_set("api", "null", ABSENT, 1)
    assert client.compare_and_set("api", "null", None, "was null")
    assert client.get("api", "null") == "was null"
    assert not client.compare_and_set("api", "null", None, "again")
    assert client.compare_and_set("api", "gone", None, ABSENT)   # "delete if missing or None": nothing to delete
    assert client.get("api", "gone", ABSENT) is ABSENT


@pytest.mark.parametrize(("stored", "expected", "matches"), [
    (1, 1.0, False),
    (1.0, 1, False),
    (1, 1, True),
    (2**40, 2**40, True),
    (True, 1, False),
    ("a", b"a", False),
    ((1, 2), [1, 2], True),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
    ({"x": [{"a": 1, "b": 2}]}, {"x": [{"b": 2, "a": 1}]}, True),
    ({"x": [1]}, {"x": [1.0]}, False),
])
def test_issue16_compare_and_set_comparison_rule(client: Client, stored: object, expected: object,
                                                 matches: bool) -> None:
    """The node compares decoded documents: map order and int width do not count, types do (1 is not 1.0)."""
    key = f"cmp-{stored!r}-{expected!r}"
    client.put("api", key, stored)
    assert client.compare_and_set("api", key, expected, "swapped") is matches
    assert client.get("api", key) == ("swapped" if matches else stored)


def test_issue16_argument_types_are_invalid_argument(client: Client) -> None:
    """The issue's example and variants of it: InvalidArgumentError naming the argument, no TypeError."""
    with pytest.raises(InvalidArgumentError, match="shards must be an int, not str"):
        client.create_dataset("x", shards="4")   # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="replication must be an int, not bool"):
        client.create_dataset("x", replication=True)
    with pytest.raises(InvalidArgumentError, match="limit must be an int, not str"):
        list(client.scan("api", limit="10"))   # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="records must be"):
        client.put_many("api", {"ab": 1})   # type: ignore[arg-type]
    assert [d.name for d in client.list_datasets()] == ["api"]


def test_a_script_that_never_closes_its_client_exits(client: Client) -> None:
    """Found by hand: a script doing `c = Client(...); c.put(...); c.put(...)` without `with` or
    close() never exited (gRPC's threads held the interpreter at shutdown). Now the client closes
    its channels at exit; the script must end within the bound (it takes well under a second)."""
    script = ("from shoal.client import Client\n"
              f"c = Client({','.join(client.seeds)!r})\n"
              "c.put('api', 'exit-a', 1)\nc.put('api', 'exit-b', 2)\nprint(c.get('api', 'exit-b'))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "2", result.stderr[-2000:]
