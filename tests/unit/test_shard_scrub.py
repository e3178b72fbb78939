"""storage/scrub.py on real LMDB files: a byte flipped in a value on disk is found; a healthy
replica under writes is never reported; marking corrupt gives a new incarnation."""
from __future__ import annotations

import pathlib

import msgpack

from shoal.node.storage import Put, ShardStore
from shoal.node.storage import scrub

MiB = 1 << 20
MARK = b"scrub-me-" + b"Q" * 40


def test_a_flipped_byte_in_a_value_is_found_and_the_replica_marked(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "replica"
    with ShardStore(path, map_size_bytes=8 * MiB) as store:
        for i in range(200):
            value = MARK if i == 77 else msgpack.packb({"i": i})
            store.execute([Put(f"k{i:04d}".encode(), value)], epoch=1)
        assert scrub.check(store) is None
        incarnation = store.incarnation
    data = bytearray((path / "data.mdb").read_bytes())
    at = data.find(MARK)
    assert at >= 0
    while at >= 0:                              # the live page and any stale copy (LMDB copies on write)
        data[at + 20] ^= 0x01                   # one bit of the value, as a failing disk would
        at = data.find(MARK, at + 1)
    (path / "data.mdb").write_bytes(bytes(data))
    with ShardStore(path, map_size_bytes=8 * MiB) as store:
        problem = scrub.check(store)
        assert problem is not None and "200 records" in problem and "meta rows say 200" in problem
        new = scrub.mark_corrupt(store)
        assert new != incarnation and store.incarnation == new
    with ShardStore(path, map_size_bytes=8 * MiB) as store:
        assert store.incarnation == new          # it survives a restart
