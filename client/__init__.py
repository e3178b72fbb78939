"""Shoal's Python client: `from shoal.client import Client`.

    with Client("127.0.0.1:7400") as c:
        c.create_dataset("events", shards=8, replication=3)
        c.put("events", "k1", {"country": "DE", "amount": 12})
        c.get("events", "k1")
        c.query("events").where("amount > 10").group_by("country").agg(n=("count", None)).collect()

Everything public is re-exported here; the underscore modules are private. Two public
subpackages sit beside them: `shoal.client.wire` (stubs, key-to-shard hash, error codes,
channel factory, retry policy: what client and node share) and `shoal.client.local` (the
local-cluster supervisor behind `shoal up` and the tests). The client
never imports shoal.node, so it installs and runs without LMDB or pysyncobj.

GRPC_VERBOSITY defaults to ERROR (notes/dependencies.md 3.9): gRPC's INFO lines about
GOAWAYs and forks would otherwise land on the stderr of every program using the client,
the `shoal` command included. An explicit setting in the environment wins.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from shoal.client._client import Client, DatasetInfo  # noqa: E402
from shoal.client._config import ClientConfig  # noqa: E402
from shoal.client._jobs import Job, JobProgress  # noqa: E402
from shoal.client._query import Query  # noqa: E402
from shoal.client._errors import (  # noqa: E402
    AlreadyExistsError,
    ClusterUnreachableError,
    DatasetExistsError,
    DatasetNotFoundError,
    DeadlineExceededError,
    EncryptionKeyError,
    InternalError,
    InvalidArgumentError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    LimitExceededError,
    NoControllerError,
    NoLeaseError,
    NotEnoughNodesError,
    NotFoundError,
    NotPrimaryError,
    OverloadedError,
    PermissionDeniedError,
    QueryError,
    ReplicationFailedError,
    ResourceExhaustedError,
    SeedsUnreachableError,
    ShoalError,
    StaleEpochError,
    StorageFullError,
    TooLargeError,
    UnauthenticatedError,
    UnavailableError,
    UnknownOutcomeError,
    UserCodeDisabledError,
    WrongShardError,
    may_have_applied,
)
from shoal.client._codec import ABSENT  # noqa: E402

__all__ = [
    "ABSENT",
    "AlreadyExistsError",
    "Client",
    "ClientConfig",
    "ClusterUnreachableError",
    "DatasetExistsError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DeadlineExceededError",
    "EncryptionKeyError",
    "InternalError",
    "InvalidArgumentError",
    "Job",
    "JobFailedError",
    "JobNotFoundError",
    "JobProgress",
    "JobTimeoutError",
    "LimitExceededError",
    "NoControllerError",
    "NoLeaseError",
    "NotEnoughNodesError",
    "NotFoundError",
    "NotPrimaryError",
    "OverloadedError",
    "PermissionDeniedError",
    "Query",
    "QueryError",
    "ReplicationFailedError",
    "ResourceExhaustedError",
    "SeedsUnreachableError",
    "ShoalError",
    "StaleEpochError",
    "StorageFullError",
    "TooLargeError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnknownOutcomeError",
    "UserCodeDisabledError",
    "WrongShardError",
    "may_have_applied",
]
