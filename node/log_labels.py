"""Log labels: the shard, job, task and attempt a log line is about, without passing them around.

An asyncio task started for one shard (its primary's loop, its learner's fill, an
activation) or one job attempt is created with `labelled(...)`: a copy of the current
context in which the labels are set (contextvars; `loop.create_task(..., context=)`), so
every line logged from that task and the tasks it starts carries them. `LabelFilter` puts
them on each LogRecord; node/__main__.py prints them: as keys of a `--log-format json`
line (`{"node": "n1", "shard": "events/3", "job": "j-42", "task": 3, "attempt": 2, ...}`)
or as `[shard=events/3]` in a text line.

Why a context variable rather than `extra=` at each call: most lines (retries, errors from
below) are logged by code that never knew which shard it served.
"""
from __future__ import annotations

import contextvars
import logging
from typing import Any, Final

LABEL_KEYS: Final = ("dataset", "shard", "job", "task", "attempt")
_LABELS: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("shoal_log_labels", default={})


def labelled(**labels: Any) -> contextvars.Context:
    """A copy of the current context with `labels` (keys of LABEL_KEYS) added; for create_task(context=)."""
    context = contextvars.copy_context()
    context.run(_LABELS.set, {**_LABELS.get(), **labels})
    return context


def current() -> dict[str, Any]:
    return dict(_LABELS.get())


class LabelFilter(logging.Filter):
    """Sets record.<label> for every label of the logging task's context (never overrides `extra=`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _LABELS.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def labels_of(record: logging.LogRecord) -> dict[str, Any]:
    """The labels a record carries, in LABEL_KEYS order."""
    return {key: getattr(record, key) for key in LABEL_KEYS if hasattr(record, key)}
