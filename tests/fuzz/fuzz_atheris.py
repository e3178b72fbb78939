"""Coverage-guided fuzzing of the in-process targets with atheris (libFuzzer), beside hypothesis.

    python tests/fuzz/fuzz_atheris.py TARGET CORPUS_DIR [libFuzzer flags, e.g. -max_total_time=60]

TARGET is one of TARGETS. Each turns libFuzzer's bytes into one input of a check of
fuzz_targets.py (the rules the hypothesis tests assert too) and calls it; an exception is a
crash: atheris prints the traceback and libFuzzer writes the input to -artifact_prefix. The
shoal modules are instrumented, so inputs that reach new code are kept in CORPUS_DIR, which is
seeded with a few well-formed inputs when empty; the entry and chunk targets write scratch LMDB
stores beside it (in its parent: libFuzzer ends the process, nothing removes them). test_fuzz_atheris.py runs every target for
--fuzz-seconds; atheris is not in the test extras (pip install atheris), and the RPC target is
hypothesis only (a node in another process gives libFuzzer no coverage to follow).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris
import msgpack

with atheris.instrument_imports(include=["shoal"]):
    import fuzz_targets
    from shoal.client.wire.pb import peer_pb2
    from shoal.node.metadata import commands
    from shoal.node.replication.copy_source import digest
    from shoal.node.storage.entry import Entry

_RECORDS = [{"i": 1, "s": "ab", "f": 2.5}, {"i": -3, "s": "b", "t": 5}, {"m": [1]}, 7, None, {"i": 2**63}]
_stores: fuzz_targets.ScratchStores | None = None


def _scratch() -> fuzz_targets.ScratchStores:
    global _stores
    if _stores is None:
        _stores = fuzz_targets.ScratchStores(Path(sys.argv[2]).parent)
    return _stores


def _spec(data: bytes) -> None:
    try:
        spec = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:   # not one msgpack document: nothing to compile
        return
    fuzz_targets.check_spec(spec, _RECORDS)


def _record(data: bytes) -> None:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    try:
        schema = unpacker.unpack()
    except Exception:   # no schema document in front
        return
    fuzz_targets.check_record(schema, data[unpacker.tell():])


def _chunk(data: bytes) -> None:
    try:
        message = peer_pb2.CopyShardChunk.FromString(data)
    except Exception:   # not a CopyShardChunk
        return
    if message.digest == 0:   # the damaged ones come with a digest; these test what comes after it
        message.digest = digest(message.data)
    fuzz_targets.check_chunk(message, "", 0, _scratch())   # a learner with nothing yet: any valid piece starts at 0


TARGETS: dict[str, Callable[[bytes], None]] = {
    "commands": fuzz_targets.check_command,
    "expressions": lambda data: fuzz_targets.check_expression(data.decode("utf-8", "replace")),
    "spec": _spec,
    "entry": lambda data: fuzz_targets.check_entry(data, _scratch()),
    "record": _record,
    "chunk": _chunk,
}


def seeds(target: str) -> list[bytes]:
    """A few well-formed inputs for `target`, for libFuzzer to start from."""
    if target == "commands":
        return [commands.create_dataset("ds2", 4, 2), commands.promote("ds", 0, "n2", 1, controller_term=1),
                commands.submit_job("job2", "ds", "query", b"\x80", 1.0, [(0, "n1")]), commands.noop()]
    if target == "expressions":
        return [b"i > 1 and s in ('a', 'b')", b"round(f, 2) + len(lower(s)) % 3", b"`m`.x is not null or not b"]
    if target == "spec":
        return [msgpack.packb(spec) for spec in (
            {"where": "i > 0", "group_by": ["s"], "aggs": [["n", "count", None], ["f", "mean", "f"]]},
            {"select": ["i", "s"], "distinct": True, "order_by": [["i", True]], "limit": 2})]
    if target == "entry":
        return [Entry(1, 1, [b"k"], [b"\x01"], [b"w" * 24], [b"\xc0"]).encode(), Entry(2, 3, [b"a"], [None], [], []).encode()]
    if target == "record":
        return [msgpack.packb(fuzz_targets.SCHEMA_JSON) + msgpack.packb({"i": 1, "t": "2024-05-01T00:00:00Z"})]
    whole = fuzz_targets.valid_snapshot()
    return [peer_pb2.CopyShardChunk(snapshot_id="00ab", offset=0, data=whole, snapshot_bytes=len(whole),
                                    snapshot_digest=digest(whole), seq=1).SerializeToString()]


def main() -> None:
    target, corpus = sys.argv[1], Path(sys.argv[2])
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for index, seed in enumerate(seeds(target)):
            corpus.joinpath(f"seed-{index}").write_bytes(seed)
    check = TARGETS[target]
    atheris.Setup([sys.argv[0], *sys.argv[3:], str(corpus)], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
