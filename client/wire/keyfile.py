"""The encryption key file of a cluster (issue 19.4, encryption at rest): its format and its id.

A key file holds one 256-bit key: 64 hexadecimal characters (what `shoal key init FILE`
writes, with a newline) or exactly 32 raw bytes (`head -c 32 /dev/urandom > FILE`). Every
node of a cluster is started with the same file (`--encryption-key-file FILE`); the node
seals the values of encrypted datasets with it (node/encryption.py).

The key id (`key_id`) names a key without revealing it: 16 hex characters of SHA-256 over
a label and the key. The metadata of an encrypted dataset records it, so a node started
with another key (or none) is told which one the dataset needs. Why a label: the id is
never the hash of the bare key, which some other tool might also publish.

Here (client side, no `cryptography` needed) because the CLI makes key files and prints
their ids, and the node reads them; the node may import client.wire, never the reverse.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import string

KEY_BYTES = 32                       # AES-256
KEY_ID_CHARS = 16                    # 64 bits of SHA-256: an id, not a secret
_KEY_ID_LABEL = b"shoal key id v1\x00"
_HEX = frozenset(string.hexdigits)


class KeyFileError(Exception):
    """A key file is missing, unreadable or not a 256-bit key; the message names the file."""


def key_id(key: bytes) -> str:
    """The public id of `key` (16 lowercase hex characters)."""
    assert len(key) == KEY_BYTES, len(key)
    return hashlib.sha256(_KEY_ID_LABEL + key).hexdigest()[:KEY_ID_CHARS]


def parse_key(data: bytes, where: str = "key file") -> bytes:
    """The 32-byte key in a key file's contents (64 hex characters, or 32 raw bytes); KeyFileError otherwise."""
    text = data.strip()
    if len(text) == 2 * KEY_BYTES and _HEX.issuperset(text.decode("latin-1")):
        return bytes.fromhex(text.decode("ascii"))
    if len(data) == KEY_BYTES:
        return data
    raise KeyFileError(f"{where} must hold a 256-bit key: 64 hex characters or 32 raw bytes, found "
                       f"{len(data)} bytes (make one with `shoal key init FILE`)")


def read_key_file(path: str | pathlib.Path) -> bytes:
    """The key in the file at `path`; KeyFileError naming the file when it cannot be read or parsed."""
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read encryption key file {path}: {exc.strerror}") from None
    return parse_key(data, f"encryption key file {path}")


def write_key_file(path: str | pathlib.Path) -> str:
    """Write a new random key to `path` (hex, mode 0600; never over an existing file); returns its id."""
    key = os.urandom(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists: a key file is never overwritten (data sealed with it "
                           "would be lost)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key_id(key)
