"""Encryption at rest (issue 19.4): the values of an encrypted dataset are sealed with AES-GCM.

Where: the primary seals a value where it becomes the bytes to store (`SealedCodec.stored`
in the data service, after a typed dataset's positional encoding), so the entry it ships,
every backup, every whole-shard copy and the scrubber's checksums see the same ciphertext,
and no node needs the key to hold or copy a replica. It opens values on every read path:
Get, Scan, compare-and-set (the current value, before the comparison) and compute tasks
(node/compute/worker.py). Keys stay plaintext (they are LMDB's sort order).

Keys: each node reads one key file (client/wire/keyfile.py: 32 bytes, `--encryption-key-file`).
A dataset's values use a key derived from it with HKDF-SHA256 and the dataset id, so a value
cannot be moved to another dataset, the 2**32 random-nonce budget of AES-GCM is per dataset,
and a compute worker gets only the key of the dataset it reads. The metadata records the
key id of an encrypted dataset (never the key); a node whose key has another id, or that
has none, refuses to serve it with EncryptionKeyError naming dataset, node and both ids
(reads, writes, deletes, compute tasks). It still holds its replicas: a backup or a learner
stores the primary's ciphertext and needs no key, so a node started with the wrong key file
keeps the shard's copies (and its durability) until it is restarted with the right one.

Stored value: b"\\x01" (format) + 12-byte random nonce + ciphertext + 16-byte tag, 29 bytes
more than the plaintext. Associated data: dataset id, NUL, record key: a value copied under
another record key does not open either. A wrong key, a damaged value or one moved to
another key or dataset is EncryptionKeyError, never garbage.

Not supported: key rotation (a dataset is sealed with one key for life), encrypting keys,
and the Raft log (query results and dataset metadata stay plaintext).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shoal.client.wire.keyfile import KeyFileError, key_id, read_key_file
from shoal.node.errors import EncryptionKeyError, StartupError

if TYPE_CHECKING:
    from shoal.node.metadata.view import DatasetView
    from shoal.node.records import RecordCodec

logger = logging.getLogger(__name__)

SEALED_FORMAT = b"\x01"
NONCE_BYTES = 12               # 96 bits: GCM's native nonce size
TAG_BYTES = 16
SEALED_OVERHEAD_BYTES = len(SEALED_FORMAT) + NONCE_BYTES + TAG_BYTES
_DERIVE_LABEL = b"shoal dataset value key v1\x00"
_CIPHERS_MAX = 1024            # cached per dataset id; cleared when full


def derive_dataset_key(key: bytes, dataset_id: str) -> bytes:
    """The 32-byte AES key of one dataset: HKDF-SHA256(node key, info = label + dataset id)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVE_LABEL + dataset_id.encode())
    return hkdf.derive(key)


class DatasetCipher:
    """Seals and opens the values of one dataset. Picklable (a compute worker gets one); its repr
    shows no key. `where` names the node in error messages."""

    __slots__ = ("dataset_id", "where", "_key", "_aead", "_prefix")

    def __init__(self, dataset_key: bytes, dataset_id: str, where: str) -> None:
        assert len(dataset_key) == 32
        self.dataset_id = dataset_id
        self.where = where
        self._key = dataset_key
        self._aead = AESGCM(dataset_key)
        self._prefix = dataset_id.encode() + b"\x00"

    def __reduce__(self) -> tuple[type[DatasetCipher], tuple[bytes, str, str]]:
        return DatasetCipher, (self._key, self.dataset_id, self.where)

    def __repr__(self) -> str:
        return f"DatasetCipher({self.dataset_id!r})"

    def seal(self, record_key: bytes, value: bytes) -> bytes:
        """The stored form of `value` under `record_key` (SEALED_OVERHEAD_BYTES longer)."""
        nonce = os.urandom(NONCE_BYTES)
        return SEALED_FORMAT + nonce + self._aead.encrypt(nonce, value, self._prefix + record_key)

    def open(self, record_key: bytes, stored: bytes) -> bytes:
        """The value sealed in `stored`; EncryptionKeyError if it is not one this key sealed under this
        dataset and record key (another key, a damaged or moved value, or a plaintext value)."""
        if len(stored) < SEALED_OVERHEAD_BYTES or stored[:1] != SEALED_FORMAT:
            raise EncryptionKeyError(self._problem(record_key, "is not a sealed value (damaged, or written "
                                                               "unencrypted)"))
        nonce = stored[1:1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, stored[1 + NONCE_BYTES:], self._prefix + record_key)
        except InvalidTag:
            raise EncryptionKeyError(self._problem(
                record_key, "does not open with this node's key (sealed with another key, damaged, or moved "
                            "from another record)")) from None

    def open_pairs(self, pairs: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """(key, opened value) for each (key, stored value) pair (a compute task's records)."""
        opened = self.open
        for key, value in pairs:
            yield key, opened(key, value)

    def _problem(self, record_key: bytes, what: str) -> str:
        name = record_key.decode("utf-8", "replace")[:80]
        return f"dataset {self.dataset_id}, key {name!r} on {self.where}: the stored value {what}"


class SealedCodec:
    """What an encrypted dataset stores and its readers get: the typed encoding (if any), sealed.

    Same methods as RecordCodec, plus `comparable` (a compare-and-set's expected value: encoded,
    never sealed, since a random nonce makes two seals of one value differ) and `open_current`
    (the current value as the comparison sees it)."""

    def __init__(self, cipher: DatasetCipher, inner: RecordCodec | None) -> None:
        self.cipher = cipher
        self.inner = inner

    def stored(self, key: bytes, value: bytes) -> bytes:
        return self.cipher.seal(key, self.comparable(key, value))

    def comparable(self, key: bytes, value: bytes) -> bytes:
        return value if self.inner is None else self.inner.stored(key, value)

    def open_current(self, key: bytes, stored: bytes) -> bytes:
        return self.cipher.open(key, stored)

    def document(self, stored: bytes, key: bytes = b"") -> bytes:
        value = self.cipher.open(key, stored)
        return value if self.inner is None else self.inner.document(value)


class NodeKey:
    """This node's key (or none) and the ciphers of the encrypted datasets it serves."""

    def __init__(self, node_id: str, key: bytes | None, path: str = "") -> None:
        self.node_id = node_id
        self.path = path
        self._key = key
        self.key_id = "" if key is None else key_id(key)
        self._ciphers: dict[str, DatasetCipher] = {}
        self._refused: set[str] = set()   # dataset ids already logged as refused (log once)

    @classmethod
    def load(cls, node_id: str, path: str) -> NodeKey:
        """The key in the file at `path` ("" = no key); StartupError naming a bad file."""
        if not path:
            return cls(node_id, None)
        try:
            key = read_key_file(path)
        except KeyFileError as exc:
            raise StartupError(f"node {node_id}: {exc}") from None
        if os.stat(path).st_mode & 0o077:
            logger.warning("encryption key file %s is readable by group or others (chmod 600 it)", path)
        node_key = cls(node_id, key, path)
        logger.info("encryption key %s loaded from %s", node_key.key_id, path)
        return node_key

    def require(self, dataset: str) -> str:
        """The key id a new encrypted dataset records; EncryptionKeyError when this node has no key."""
        if self._key is None:
            raise EncryptionKeyError(f"cannot create encrypted dataset {dataset}: node {self.node_id} has no "
                                     "encryption key (start every node with --encryption-key-file FILE, made once "
                                     "with `shoal key init FILE`)")
        return self.key_id

    def cipher(self, dataset: DatasetView) -> DatasetCipher | None:
        """The cipher of an encrypted dataset, None for a plain one; EncryptionKeyError when this node's
        key is not the dataset's (or it has none)."""
        wanted = dataset.encryption_key_id
        if not wanted:
            return None
        cipher = self._ciphers.get(dataset.id)
        if cipher is not None:
            return cipher
        if self._key is None or self.key_id != wanted:
            have = f"key {self.key_id} ({self.path})" if self._key is not None else "no encryption key"
            message = (f"node {self.node_id} cannot serve encrypted dataset {dataset.name}: it needs encryption "
                       f"key {wanted}, the node has {have}; restart the node with --encryption-key-file naming "
                       "the cluster's key file")
            if dataset.id not in self._refused:
                self._refused.add(dataset.id)
                logger.error("%s", message)
            raise EncryptionKeyError(message)
        if len(self._ciphers) >= _CIPHERS_MAX:
            self._ciphers.clear()
        cipher = self._ciphers[dataset.id] = DatasetCipher(
            derive_dataset_key(self._key, dataset.id), dataset.id, f"node {self.node_id}")
        return cipher

    def codec(self, dataset: DatasetView, inner: RecordCodec | None) -> RecordCodec | SealedCodec | None:
        """The codec the data service uses: `inner` (a typed dataset's, or None) sealed when encrypted."""
        cipher = self.cipher(dataset)
        return inner if cipher is None else SealedCodec(cipher, inner)
