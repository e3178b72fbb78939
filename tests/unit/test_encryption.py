"""Issue 19.4: the cipher of encrypted datasets, the key file, and a sealed store (no cluster).

The cipher is real AES-GCM (cryptography); the store is a real LMDB environment in a temp dir.
"""
from __future__ import annotations

import os
import pathlib
import pickle

import msgpack
import pytest

from shoal.client.wire.keyfile import KeyFileError, key_id, parse_key, read_key_file, write_key_file
from shoal.node.encryption import SEALED_OVERHEAD_BYTES, DatasetCipher, NodeKey, SealedCodec, derive_dataset_key
from shoal.node.errors import EncryptionKeyError, StartupError
from shoal.node.metadata.view import DatasetView
from shoal.node.storage import CompareAndSet, Put, PutBatch, ShardStore

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def _cipher(key: bytes = KEY, dataset_id: str = "secret@3") -> DatasetCipher:
    return DatasetCipher(derive_dataset_key(key, dataset_id), dataset_id, "node n1")


def _dataset(key_id_: str, dataset_id: str = "secret@3") -> DatasetView:
    return DatasetView("secret", 1, 1, (), dataset_id, {}, key_id_)


def test_cipher_round_trip_hides_the_value() -> None:
    """A sealed value opens to itself, is SEALED_OVERHEAD_BYTES longer, holds no plaintext, and two
    seals of one value differ (random nonce)."""
    cipher = _cipher()
    value = b"MARKER-plaintext-value" * 3
    sealed = cipher.seal(b"k1", value)
    assert cipher.open(b"k1", sealed) == value
    assert len(sealed) == len(value) + SEALED_OVERHEAD_BYTES
    assert b"MARKER" not in sealed
    assert cipher.seal(b"k1", value) != sealed
    assert cipher.open(b"k", cipher.seal(b"k", b"")) == b""


@pytest.mark.parametrize("damage", ["flip_ciphertext", "flip_tag", "flip_nonce", "truncate", "plaintext"])
def test_cipher_refuses_a_damaged_value(damage: str) -> None:
    """Any changed byte (ciphertext, tag, nonce), a cut value or an unsealed one: EncryptionKeyError, never garbage."""
    cipher = _cipher()
    sealed = bytearray(cipher.seal(b"k1", b"some value"))
    if damage == "flip_ciphertext":
        sealed[14] ^= 1
    elif damage == "flip_tag":
        sealed[-1] ^= 0x80
    elif damage == "flip_nonce":
        sealed[1] ^= 1
    elif damage == "truncate":
        sealed = sealed[:10]
    else:
        sealed = bytearray(msgpack.packb({"a": 1}))
    with pytest.raises(EncryptionKeyError, match="dataset secret@3, key 'k1' on node n1"):
        cipher.open(b"k1", bytes(sealed))


def test_cipher_binds_key_dataset_and_record() -> None:
    """A value opens only with its key, in its dataset, under its record key (associated data)."""
    sealed = _cipher().seal(b"k1", b"v")
    for other, record_key in ((_cipher(OTHER_KEY), b"k1"), (_cipher(dataset_id="secret@9"), b"k1"),
                              (_cipher(), b"k2")):
        with pytest.raises(EncryptionKeyError, match="does not open with this node's key"):
            other.open(record_key, sealed)


def test_cipher_pickles_without_showing_its_key() -> None:
    """A compute worker gets the cipher pickled; its repr names only the dataset."""
    cipher = _cipher()
    copy = pickle.loads(pickle.dumps(cipher))
    assert copy.open(b"k", cipher.seal(b"k", b"v")) == b"v"
    assert repr(cipher) == "DatasetCipher('secret@3')"
    assert list(copy.open_pairs([(b"a", cipher.seal(b"a", b"1"))])) == [(b"a", b"1")]


def test_key_file_formats_and_ids(tmp_path: pathlib.Path) -> None:
    """`shoal key init` writes hex with mode 0600 and never overwrites; raw 32 bytes also read;
    anything else is one clear KeyFileError; the id is stable, 16 hex characters, not the key."""
    path = tmp_path / "k.key"
    identity = write_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert key_id(read_key_file(path)) == identity and len(identity) == 16
    with pytest.raises(KeyFileError, match="never overwritten"):
        write_key_file(path)
    assert parse_key(KEY) == KEY and parse_key(KEY.hex().encode() + b"\n") == KEY
    assert key_id(KEY) != key_id(OTHER_KEY) and KEY.hex()[:16] not in key_id(KEY)
    for bad in (b"", b"abc", KEY + b"x", b"g" * 64):
        with pytest.raises(KeyFileError, match="64 hex characters or 32 raw bytes"):
            parse_key(bad)
    with pytest.raises(StartupError, match="cannot read encryption key file"):
        NodeKey.load("n1", str(tmp_path / "missing"))


def test_node_key_refuses_a_dataset_of_another_key() -> None:
    """A node without the dataset's key (none, or another) gets one error naming the dataset, the
    node and both key ids; a plain dataset needs no key; create needs one."""
    mine, other, none = NodeKey("n1", KEY), NodeKey("n2", OTHER_KEY), NodeKey("n3", None)
    dataset = _dataset(mine.key_id)
    assert mine.cipher(dataset) is mine.cipher(dataset)   # cached
    assert other.cipher(_dataset("")) is None
    with pytest.raises(EncryptionKeyError, match=f"node n2 cannot serve encrypted dataset secret: it needs "
                                                 f"encryption key {mine.key_id}, the node has key {other.key_id}"):
        other.cipher(dataset)
    with pytest.raises(EncryptionKeyError, match="node n3 .* the node has no encryption key"):
        none.cipher(dataset)
    with pytest.raises(EncryptionKeyError, match="cannot create encrypted dataset secret: node n3 has no"):
        none.require("secret")
    assert mine.require("secret") == mine.key_id


def test_sealed_store_replicates_ciphertext_and_compares_opened_values(tmp_path: pathlib.Path) -> None:
    """The primary stores sealed values; the entry carries them to a backup unchanged (equal
    checksums, the same bytes); a compare-and-set compares the opened value and records the
    sealed current value, so neither LMDB file holds the plaintext."""
    codec = SealedCodec(_cipher(), None)
    doc = msgpack.packb({"secret": "MARKER-1"})
    with ShardStore(tmp_path / "p", map_size_bytes=1 << 22) as primary, \
            ShardStore(tmp_path / "b", map_size_bytes=1 << 22) as backup:
        entries = []
        wid = os.urandom(16) + (1).to_bytes(8, "big")
        entry, _ = primary.execute([PutBatch([b"a", b"b"], [codec.stored(b"a", doc), codec.stored(b"b", doc)])], 1)
        entries.append(entry)
        new = msgpack.packb({"secret": "MARKER-2"})
        cas = CompareAndSet(b"a", False, codec.comparable(b"a", doc), False, codec.stored(b"a", new), wid,
                            codec.open_current)
        entry, results = primary.execute([cas], 1)
        entries.append(entry)
        swapped, found, current = results[0]
        assert swapped and found and codec.document(current, b"a") == doc
        wrong = CompareAndSet(b"b", False, codec.comparable(b"b", new), False, codec.stored(b"b", new),
                              open_current=codec.open_current)
        entry, results = primary.execute([wrong, Put(b"c", codec.stored(b"c", doc))], 1)
        entries.append(entry)
        assert results[0][0] is False
        for entry in entries:
            backup.apply(entry)
        assert primary.state.checksum == backup.state.checksum and primary.verify() == backup.verify()
        assert codec.document(backup.get(b"a") or b"", b"a") == new
        assert primary.get(b"b") == backup.get(b"b")
    for store in ("p", "b"):
        assert b"MARKER" not in (tmp_path / store / "data.mdb").read_bytes()


def test_cli_key_init_and_id(tmp_path: pathlib.Path) -> None:
    """`shoal key init FILE` writes a key and prints its id; `shoal key id FILE` prints the same id;
    a second init over the file is one error line and exit 1, the file unchanged."""
    from typer.testing import CliRunner

    from shoal.client.cli import app

    runner = CliRunner()
    path = tmp_path / "cluster.key"
    made = runner.invoke(app, ["key", "init", str(path)])
    assert made.exit_code == 0, made.output
    identity = key_id(read_key_file(path))
    assert f"(key id {identity})" in made.output
    shown = runner.invoke(app, ["key", "id", str(path)])
    assert shown.exit_code == 0 and shown.output.strip() == identity
    before = path.read_bytes()
    again = runner.invoke(app, ["key", "init", str(path)])
    assert again.exit_code == 1 and "never overwritten" in again.output and path.read_bytes() == before


def test_fsm_records_the_key_id_of_an_encrypted_dataset() -> None:
    """create_dataset records the key id (the view and DatasetInfo show it); a plain dataset's state
    has no such field; a key id that is not hex is refused; an old command without it is plain."""
    from shoal.node.metadata import commands, fsm
    from shoal.node.metadata.view import MetadataView
    from shoal.node.status import dataset_info

    state = fsm.initial_state()
    state, result = fsm.apply(state, commands.register_node("n1", "127.0.0.1:1", "", ""))
    assert result["ok"], result
    state, result = fsm.apply(state, commands.create_dataset("secret", 1, 1, encryption_key_id=key_id(KEY)))
    assert result["ok"], result
    state, result = fsm.apply(state, commands.create_dataset("plain", 1, 1))
    assert result["ok"], result
    state, result = fsm.apply(state, commands.create_dataset("bad", 1, 1, encryption_key_id="NOT HEX"))
    assert not result["ok"] and "encryption key id" in result["message"]
    view = MetadataView.from_state(state)
    assert view.datasets["secret"].encryption_key_id == key_id(KEY)
    assert dataset_info(view.datasets["secret"], view).encryption_key_id == key_id(KEY)
    assert "encryption_key_id" not in state["datasets"]["plain"] and view.datasets["plain"].encryption_key_id == ""
    old = msgpack.packb({"v": 1, "op": "create_dataset", "request_id": "r-old", "name": "old", "shards": 1,
                         "replication": 1})
    assert commands.decode_command(old)["encryption_key_id"] == ""
