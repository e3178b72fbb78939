"""Domain errors of the node. interceptors.ErrorMapping maps each to a gRPC status in one place.

NodeError
├── ConfigError            bad configuration at start (never reaches gRPC)
├── DataDirLockedError     another daemon owns the data dir
├── UnknownDatasetError    NOT_FOUND
├── DatasetExistsError     ALREADY_EXISTS
├── InvalidRequestError    INVALID_ARGUMENT (bad key, value, shard or field)
│   ├── TooLargeError      INVALID_ARGUMENT, code TOO_LARGE
│   ├── WrongShardError    INVALID_ARGUMENT, code WRONG_SHARD
│   └── InvalidQueryError  INVALID_ARGUMENT, code INVALID_QUERY: a bad query spec or expression
├── StorageFullError       RESOURCE_EXHAUSTED: LMDB map or disk full (or a metadata file not written); readable
│   └── FileLimitError     RESOURCE_EXHAUSTED: the open-files limit (RLIMIT_NOFILE) leaves no room for a shard
├── OverloadedError        RESOURCE_EXHAUSTED, retriable
│   └── StreamIdleError    RESOURCE_EXHAUSTED, code OVERLOADED: a stream the client stopped reading or feeding (node/streams.py)
├── NotPrimaryError        UNAVAILABLE: refresh the shard map
├── StaleEpochError        FAILED_PRECONDITION: the sender's epoch is older than ours
├── NoLeaseError           UNAVAILABLE: the primary's lease is not valid now
├── NoControllerError      UNAVAILABLE: no Raft leader reachable
├── UnknownOutcomeError    UNAVAILABLE: a proposal or write may or may not have applied
├── NotEnoughNodesError    FAILED_PRECONDITION
├── ReplicationError       UNAVAILABLE: a backup failed and could not be fenced out
├── WrongClusterError      PERMISSION_DENIED: a peer message from a node of another cluster
├── UnknownJobError        NOT_FOUND: no such job (or forgotten: only the newest finished jobs are kept)
├── LimitExceededError     RESOURCE_EXHAUSTED: a job limit (running jobs, result size)
├── JobFailedError         FAILED_PRECONDITION: the job failed; the message names shard and node
├── UserCodeDisabledError  PERMISSION_DENIED: map_reduce on a cluster started without user code
├── UnauthenticatedError   UNAUTHENTICATED: no, malformed, unknown or revoked token (node/auth.py)
├── PermissionDeniedError  PERMISSION_DENIED: the token's role may not call this RPC
└── EncryptionKeyError     FAILED_PRECONDITION: this node lacks an encrypted dataset's key, or a
                           stored value does not open with it (node/encryption.py)
"""
from __future__ import annotations


class NodeError(Exception):
    """Base of every error the node raises on purpose."""

    code = "ERROR_CODE_UNSPECIFIED"   # name of shoal.v1.ErrorCode sent to the client
    retriable = False


class ConfigError(NodeError):
    code = "INVALID_ARGUMENT"


class DataDirLockedError(NodeError):
    pass


class UnknownDatasetError(NodeError):
    code = "UNKNOWN_DATASET"


class DatasetExistsError(NodeError):
    code = "DATASET_EXISTS"


class InvalidRequestError(NodeError):
    code = "INVALID_ARGUMENT"


class TooLargeError(InvalidRequestError):
    code = "TOO_LARGE"


class WrongShardError(InvalidRequestError):
    code = "WRONG_SHARD"


class InvalidQueryError(InvalidRequestError):
    code = "INVALID_QUERY"


class StorageFullError(NodeError):
    code = "STORAGE_FULL"


class FileLimitError(StorageFullError):
    """Opening a shard hit the open-files limit; the message names the limit and the fds a shard needs.

    A subclass of StorageFullError so it reaches clients as RESOURCE_EXHAUSTED without a new code."""


class OverloadedError(NodeError):
    """Too many requests in flight; `retry_after_s` is the hint sent to the caller."""

    code = "OVERLOADED"
    retriable = True

    def __init__(self, message: str, *, retry_after_s: float = 0.05) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StreamIdleError(OverloadedError):
    """The node closed a stream: the client took no message, or sent none while nothing was in
    flight, for stream_idle_timeout_s. An OverloadedError (code OVERLOADED, retriable) so that
    clients resume (a scan after its last key) instead of failing: the node shed a resource."""


class NotPrimaryError(NodeError):
    code = "NOT_PRIMARY"
    retriable = True


class StaleEpochError(NodeError):
    code = "STALE_EPOCH"
    retriable = True


class NoLeaseError(NodeError):
    code = "NO_LEASE"
    retriable = True


class NoControllerError(NodeError):
    code = "NO_CONTROLLER"
    retriable = True


class UnknownOutcomeError(NodeError):
    code = "UNKNOWN_OUTCOME"
    retriable = True


class NotEnoughNodesError(NodeError):
    code = "NOT_ENOUGH_NODES"


class ReplicationError(NodeError):
    code = "REPLICATION_FAILED"
    retriable = True


class WrongClusterError(NodeError):
    code = "WRONG_CLUSTER"


class UnknownJobError(NodeError):
    code = "UNKNOWN_JOB"


class LimitExceededError(NodeError):
    code = "LIMIT_EXCEEDED"


class JobFailedError(NodeError):
    code = "JOB_FAILED"


class UserCodeDisabledError(NodeError):
    code = "USER_CODE_DISABLED"


class UnauthenticatedError(NodeError):
    code = "UNAUTHENTICATED"


class PermissionDeniedError(NodeError):
    code = "PERMISSION_DENIED"


class EncryptionKeyError(NodeError):
    """The node has no key, or another key than an encrypted dataset's, or a value does not open
    with it (damaged, moved); the message names dataset, node and key ids. Never retried: an
    operator must start the node with the cluster's key file."""

    code = "ENCRYPTION_KEY"


class StartupError(NodeError):
    """The node cannot start (port taken, rejected by the cluster); never reaches gRPC."""
