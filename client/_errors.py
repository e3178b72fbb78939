"""The client's error tree, and the one function that turns a gRPC failure into it.

Every error the client raises on purpose is a ShoalError. Two class flags drive the
client's own retry loop (the caller can read them too):

- `retriable`: the same request may succeed later; the client retries it, with the same
  write id for writes, until the call's deadline.
- `refresh_routing`: the client's shard map is out of date; reload it before retrying.

ShoalError
├── NotFoundError                      NOT_FOUND
│   ├── DatasetNotFoundError           UNKNOWN_DATASET
│   └── JobNotFoundError               UNKNOWN_JOB
├── InvalidArgumentError               INVALID_ARGUMENT (also raised before sending bad input)
│   ├── QueryError                     INVALID_QUERY: a bad query spec or expression (names the position)
│   ├── TooLargeError                  TOO_LARGE: key, value or batch over its limit
│   └── WrongShardError                WRONG_SHARD   [retriable, refresh_routing]
├── AlreadyExistsError                 ALREADY_EXISTS
│   └── DatasetExistsError             DATASET_EXISTS
├── ResourceExhaustedError             RESOURCE_EXHAUSTED
│   ├── StorageFullError               STORAGE_FULL: the shard stays readable
│   ├── OverloadedError                OVERLOADED    [retriable]
│   └── LimitExceededError             LIMIT_EXCEEDED: running jobs, result size
├── UnavailableError                   UNAVAILABLE, CANCELLED, ABORTED   [retriable]
│   ├── NotPrimaryError                NOT_PRIMARY   [retriable, refresh_routing]
│   ├── NoLeaseError                   NO_LEASE      [retriable, refresh_routing]
│   ├── NoControllerError              NO_CONTROLLER [retriable]
│   ├── ReplicationFailedError         REPLICATION_FAILED [retriable]
│   └── ClusterUnreachableError        no seed or known node answered [retriable]
│       └── SeedsUnreachableError      first contact: no seed has ever answered (not retried)
├── StaleEpochError                    STALE_EPOCH   [retriable, refresh_routing]
├── NotEnoughNodesError                NOT_ENOUGH_NODES
├── JobFailedError                     JOB_FAILED: a task failed; the message names shard and node
├── EncryptionKeyError                 ENCRYPTION_KEY: the node lacks the encrypted dataset's key (names both ids)
├── PermissionDeniedError              PERMISSION_DENIED: also a token whose role may not call the RPC
│   └── UserCodeDisabledError          USER_CODE_DISABLED
├── UnauthenticatedError               UNAUTHENTICATED: no, malformed, unknown or revoked token
├── DeadlineExceededError              DEADLINE_EXCEEDED (a read, or a write never sent)
│   └── JobTimeoutError                Job.result/Query.collect timeout passed, the job still runs (names it)
├── UnknownOutcomeError                UNKNOWN_OUTCOME [retriable]
└── InternalError                      INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS

UnknownOutcomeError is deliberately not an UnavailableError: a write that may or may not
have been applied must never look like a plain failure (a caller that treats "failed" as
"not written" would be wrong). Retrying it with the same write id is safe, which is why
it is retriable; when the deadline runs out the client raises it to the caller.

Errors that share a gRPC status are told apart by the error code in the trailing
metadata (wire.codes.ERROR_METADATA_KEY, the name of a shoal.v1.ErrorCode), which wins
over the status when both are present. OverloadedError carries the node's retry hint
(`retry_after_s`), which the client's backoff honours.
"""
from __future__ import annotations

import logging
from typing import ClassVar

import grpc

from shoal.client.wire.codes import ERROR_METADATA_KEY, RETRY_AFTER_METADATA_KEY, metadata_value

logger = logging.getLogger(__name__)

_KEY_REPR_CHARS_MAX = 60


class ShoalError(Exception):
    """Base of every error the client raises on purpose; says what failed and where."""

    retriable: ClassVar[bool] = False
    refresh_routing: ClassVar[bool] = False

    def __init__(self, message: str, *, dataset: str | None = None, key: str | bytes | None = None,
                 node: str | None = None, shard: int | None = None, code: str | None = None,
                 status: str | None = None, sent: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.dataset = dataset
        self.key = key
        self.node = node            # the address the request went to, when one did
        self.shard = shard
        self.code = code            # shoal.v1.ErrorCode name from the node, if any
        self.status = status        # gRPC status name, if the error came from gRPC
        self.sent = sent            # False when the request certainly never left the client

    def __str__(self) -> str:
        where = []
        if self.dataset is not None:
            where.append(f"dataset={self.dataset}")
        if self.shard is not None:
            where.append(f"shard={self.shard}")
        if self.key is not None:
            text = repr(self.key)
            if len(text) > _KEY_REPR_CHARS_MAX:
                text = text[:_KEY_REPR_CHARS_MAX - 3] + "..."
            where.append(f"key={text}")
        if self.node is not None:
            where.append(f"node={self.node}")
        return f"{self.message} [{' '.join(where)}]" if where else self.message


class NotFoundError(ShoalError):
    pass


class DatasetNotFoundError(NotFoundError):
    pass


class JobNotFoundError(NotFoundError):
    pass


class InvalidArgumentError(ShoalError):
    pass


class TooLargeError(InvalidArgumentError):
    pass


class WrongShardError(InvalidArgumentError):
    """The key does not hash to the named shard: our map predates a re-created dataset."""

    retriable = True
    refresh_routing = True


class QueryError(InvalidArgumentError):
    pass


class AlreadyExistsError(ShoalError):
    pass


class DatasetExistsError(AlreadyExistsError):
    pass


class ResourceExhaustedError(ShoalError):
    pass


class StorageFullError(ResourceExhaustedError):
    pass


class OverloadedError(ResourceExhaustedError):
    """The node is at its in-flight request limit; `retry_after_s` is its hint (seconds)."""

    retriable = True
    retry_after_s: float = 0.0


class LimitExceededError(ResourceExhaustedError):
    pass


class UnavailableError(ShoalError):
    retriable = True


class NotPrimaryError(UnavailableError):
    refresh_routing = True


class NoLeaseError(UnavailableError):
    refresh_routing = True


class NoControllerError(UnavailableError):
    pass


class ReplicationFailedError(UnavailableError):
    pass


class ClusterUnreachableError(UnavailableError):
    """No seed or known node answered: the address is wrong or the whole cluster is down."""


class SeedsUnreachableError(ClusterUnreachableError):
    """No seed address has ever answered this client, within ClientConfig.connect_timeout_s.

    Not retried by the client (client/_contact.py): with nothing ever heard, a wrong
    address and a dead cluster look the same, and waiting the whole call's deadline helps
    neither. The message names every seed and what happened to it. Calling again later
    starts a new first contact.
    """

    retriable = False


class StaleEpochError(ShoalError):
    retriable = True
    refresh_routing = True


class NotEnoughNodesError(ShoalError):
    pass


class JobFailedError(ShoalError):
    pass


class EncryptionKeyError(ShoalError):
    """A node cannot open an encrypted dataset's values: it has no key or another one (or a value
    is damaged); the message names the dataset, the node and the key ids. Not retried."""


class PermissionDeniedError(ShoalError):
    pass


class UserCodeDisabledError(PermissionDeniedError):
    pass


class UnauthenticatedError(ShoalError):
    """No, malformed, unknown or revoked bearer token (the message names the token id, never its secret)."""


class DeadlineExceededError(ShoalError):
    pass


class JobTimeoutError(DeadlineExceededError, TimeoutError):
    """Job.result / Query.collect: the timeout passed and the job still runs (it goes on).

    `job_id` names it: `client.job(job_id)` reattaches, from any process. Also a built-in
    TimeoutError, which is what result() raised before it existed (callers catch that).
    """

    def __init__(self, message: str, *, job_id: str = "", dataset: str | None = None) -> None:
        super().__init__(message, dataset=dataset)
        self.job_id = job_id


class UnknownOutcomeError(ShoalError):
    retriable = True


class InternalError(ShoalError):
    pass


_BY_CODE: dict[str, type[ShoalError]] = {
    "UNKNOWN_DATASET": DatasetNotFoundError,
    "DATASET_EXISTS": DatasetExistsError,
    "INVALID_ARGUMENT": InvalidArgumentError,
    "TOO_LARGE": TooLargeError,
    "STORAGE_FULL": StorageFullError,
    "OVERLOADED": OverloadedError,
    "NOT_PRIMARY": NotPrimaryError,
    "STALE_EPOCH": StaleEpochError,
    "NO_LEASE": NoLeaseError,
    "NO_CONTROLLER": NoControllerError,
    "UNKNOWN_OUTCOME": UnknownOutcomeError,
    "NOT_ENOUGH_NODES": NotEnoughNodesError,
    "REPLICATION_FAILED": ReplicationFailedError,
    "WRONG_SHARD": WrongShardError,
    "UNKNOWN_JOB": JobNotFoundError,
    "INVALID_QUERY": QueryError,
    "LIMIT_EXCEEDED": LimitExceededError,
    "JOB_FAILED": JobFailedError,
    "ENCRYPTION_KEY": EncryptionKeyError,
    "USER_CODE_DISABLED": UserCodeDisabledError,
    "UNAUTHENTICATED": UnauthenticatedError,
    "PERMISSION_DENIED": PermissionDeniedError,
}

_BY_STATUS: dict[grpc.StatusCode, type[ShoalError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.CANCELLED: UnavailableError,
    grpc.StatusCode.ABORTED: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.UNIMPLEMENTED: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
}

# gRPC says this when the connection was never established: the request did not leave.
_NOT_SENT_MARKERS = ("failed to connect to all addresses", "Failed to connect to remote host")


def error_from_code(code: str, message: str, *, node: str | None = None, dataset: str | None = None,
                    shard: int | None = None) -> ShoalError:
    """Build the error for a shoal.v1.ErrorCode name (PutBatchAck.error; not a gRPC failure)."""
    cls = _BY_CODE.get(code, ShoalError)
    return cls(message, code=code, node=node, dataset=dataset, shard=shard)


def error_from_rpc(exc: grpc.RpcError, what: str, *, node: str | None = None, dataset: str | None = None,
                   key: str | bytes | None = None, shard: int | None = None) -> ShoalError:
    """THE mapping from a failed gRPC call to a ShoalError; callers `raise ... from exc`.

    `what` names the operation ("put", "scan"); the message reads "put failed: <details>".
    """
    status = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    code = _shoal_code(exc)
    sent = not any(marker in details for marker in _NOT_SENT_MARKERS)
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status, ShoalError)
    message = f"{what} failed: {_short_details(details)}"
    if status is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{what} failed: no answer before the deadline"
    error = cls(message, dataset=dataset, key=key, node=node, shard=shard, code=code,
                status=status.name, sent=sent)
    if isinstance(error, OverloadedError):
        error.retry_after_s = _retry_after_s(exc)
    return error


def may_have_applied(exc: ShoalError) -> bool:
    """True when a write that failed with `exc` may nevertheless have been applied.

    Definite rejections from the node (NOT_PRIMARY, STALE_EPOCH, OVERLOADED, a bad
    argument ...) were not applied; a lost connection after sending, a deadline, an
    internal error or an explicit UNKNOWN_OUTCOME leave the outcome open.
    """
    if isinstance(exc, (UnknownOutcomeError, DeadlineExceededError, ReplicationFailedError, InternalError)):
        return True
    if type(exc) in (UnavailableError, ClusterUnreachableError):   # no verdict from a node
        return exc.sent
    return False


def _trailing(exc: grpc.RpcError, key: str) -> str | None:
    return metadata_value(exc.trailing_metadata() if isinstance(exc, grpc.Call) else None, key)


def _shoal_code(exc: grpc.RpcError) -> str | None:
    return _trailing(exc, ERROR_METADATA_KEY)


def _retry_after_s(exc: grpc.RpcError) -> float:
    raw = _trailing(exc, RETRY_AFTER_METADATA_KEY)
    try:
        return max(0.0, int(raw or 0) / 1000)
    except ValueError:
        return 0.0


def _short_details(details: str) -> str:
    """Keep gRPC's connection errors readable: 'Connection refused', not a chain of causes."""
    marker = "Failed to connect to remote host: "
    if marker in details:
        return details.split(marker, 1)[1].strip()
    return " ".join(details.split())
