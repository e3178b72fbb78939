"""Pacing: repair copies slow down while this node's client writes get slower (issue 18.3).

The signal (`WriteLatency`): every client write this node acknowledges as a shard's
primary reports how long it took, from `ShardPrimary.submit` queueing it to its
acknowledgement (group commit, fsync, replication to the backups: where a copy's reads,
hashing and sends compete with the clients). The recorder cuts time into windows of
WINDOW_S and keeps, per window with at least SAMPLES_MIN writes, its p90 and the *usual*
p90: the median p90 of the last HISTORY_WINDOWS such windows before it (two minutes of a
node that is written to all the time).

The rule (`CopyPacing`, `next_share`): AIMD, additive increase / multiplicative decrease,
the rule of TCP congestion avoidance (V. Jacobson, "Congestion Avoidance and Control",
SIGCOMM 1988; D. Chiu and R. Jain, 1989, on why it converges and is fair). The copies'
*share* of `repair_bytes_per_s` starts at 1; per window

- slow (p90 > repair_pacing_latency_factor x usual + LATENCY_SLACK_S): halved, but never
  below SHARE_MIN (1/16): a copy always progresses, and a stuck repair is worse for the
  clients than a slow one (the shard stays short of copies);
- otherwise (including windows with too few writes to judge, and before there is a usual
  value): + SHARE_STEP (1/16), up to 1: from the floor back to the full rate in 15 s.

Like LEDBAT (RFC 6817, background transfers that yield to other traffic when the delay
rises above a base delay), the reference is the latency seen recently rather than an
absolute target, since a node's normal latency depends on its disk, `lmdb_sync` and load.
LEDBAT's base is a minimum; the usual value here is a median, because write latency on a
shared machine is noisy and the luckiest window would make ordinary jitter look like
harm. The history is two minutes, so the reference moves slowly: a copy that keeps
latency up for over a minute becomes the new usual and the rate grows back; a load that
truly rose is accepted the same way. (CockroachDB paces its background "elastic" work by
the same shape of loop, from scheduling latency.)

The share is stepped once per closed window, replayed lazily when a copy asks for its
rate (`Throttle.pay`, per chunk): with no copy running nothing is computed beyond the
recorder's windows. A cut or the return to the full rate is logged at INFO, at most one
"copies slowed" line per LOG_INTERVAL_S. With `repair_bytes_per_s` = 0 (unlimited) or
`repair_pacing_latency_factor` = 0, copies are not paced.

`WriteLatency` is thread-safe (a lock; O(1) per write, one sort of at most SAMPLES_MAX
floats per window). `CopyPacing` is used from the event loop only.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from statistics import median
from typing import Callable, Iterable

logger = logging.getLogger(__name__)

WINDOW_S = 1.0              # one measurement window, and one AIMD step (TCP's round trip)
HISTORY_WINDOWS = 120       # the usual p90: median over this many recent windows with writes (2 min)
HISTORY_WINDOWS_MIN = 5     # fewer such windows so far: no usual value, no window is slow
SAMPLES_MIN = 16            # a window with fewer writes says nothing about latency
SAMPLES_MAX = 1024          # the latest this many writes of a window give its p90
LATENCY_SLACK_S = 0.002     # extra latency below this is scheduler jitter, not harm worth a slower repair
SHARE_MIN = 1 / 16          # the floor: copies always get this share of repair_bytes_per_s
SHARE_STEP = 1 / 16         # additive increase per calm window
SHARE_DECREASE = 0.5        # multiplicative decrease per slow window
LOG_INTERVAL_S = 10.0       # at most one "copies slowed" line this often


@dataclasses.dataclass(frozen=True, slots=True)
class LatencyWindow:
    """One closed window that had at least SAMPLES_MIN client writes."""
    index: int                # windows closed before it + 1 (windows without writes count too)
    writes: int
    p90_s: float
    usual_s: float | None     # median p90 of the windows before it; None: fewer than HISTORY_WINDOWS_MIN


@dataclasses.dataclass(frozen=True, slots=True)
class WriteLatencyStatistics:
    writes: int               # client writes recorded since start
    p90_s: float | None       # of the last window with enough writes
    usual_s: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class PacingStatistics:
    share: float              # of repair_bytes_per_s the copies may use now (SHARE_MIN..1)
    slow_windows: int         # windows judged slow since start (each halved the share)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    assert values and 0 < fraction <= 1
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class WriteLatency:
    """Latency of the client writes this node acknowledges as primary, per window (module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start_s = clock()
        self._samples: list[float] = []
        self._window_writes = 0
        self._writes = 0
        self._closed = 0            # windows closed so far, with writes or not
        self._windows: collections.deque[LatencyWindow] = collections.deque(maxlen=HISTORY_WINDOWS)

    def record(self, latency_s: float) -> None:
        """One acknowledged client write that took `latency_s` (put, delete, CAS or a batch)."""
        with self._lock:
            self._roll(self.clock())
            if len(self._samples) < SAMPLES_MAX:
                self._samples.append(latency_s)
            else:   # keep the latest SAMPLES_MAX
                self._samples[self._window_writes % SAMPLES_MAX] = latency_s
            self._window_writes += 1
            self._writes += 1

    def windows_after(self, index: int) -> tuple[int, list[LatencyWindow]]:
        """(windows closed so far, the windows with writes closed after window `index`), closing
        the current window first if its time is up."""
        with self._lock:
            self._roll(self.clock())
            return self._closed, [w for w in self._windows if w.index > index]

    def statistics(self) -> WriteLatencyStatistics:
        with self._lock:
            last = self._windows[-1] if self._windows else None
            return WriteLatencyStatistics(self._writes, last.p90_s if last else None, last.usual_s if last else None)

    def _roll(self, now_s: float) -> None:
        passed = int((now_s - self._window_start_s) // WINDOW_S)
        if passed < 1:
            return
        self._closed += 1
        if self._window_writes >= SAMPLES_MIN:
            history = [w.p90_s for w in self._windows]
            usual = median(history) if len(history) >= HISTORY_WINDOWS_MIN else None
            self._windows.append(LatencyWindow(self._closed, self._window_writes,
                                               percentile(self._samples, 0.9), usual))
        self._closed += passed - 1   # the windows after it had no writes
        self._window_start_s += passed * WINDOW_S
        self._samples = []
        self._window_writes = 0


def slow(window: LatencyWindow, latency_factor: float) -> bool:
    """The window's p90 is above latency_factor x the usual p90, plus LATENCY_SLACK_S."""
    return window.usual_s is not None and window.p90_s > window.usual_s * latency_factor + LATENCY_SLACK_S


def next_share(share: float, verdicts: Iterable[bool]) -> float:
    """AIMD over windows in order (True = slow): halve down to SHARE_MIN, else + SHARE_STEP up to 1."""
    for is_slow in verdicts:
        share = max(SHARE_MIN, share * SHARE_DECREASE) if is_slow else min(1.0, share + SHARE_STEP)
    return share


class CopyPacing:
    """The rate every copy this node sends may use now: repair_bytes_per_s x the AIMD share."""

    def __init__(self, latency: WriteLatency, latency_factor: float) -> None:
        assert latency_factor == 0 or latency_factor > 1
        self.latency = latency
        self.latency_factor = latency_factor   # 0 = no pacing
        self._share = 1.0
        self._seen = 0              # windows closed when the share was last stepped
        self._slow_windows = 0
        self._slow_unlogged = 0
        self._logged_s = -math.inf

    def rate_bytes_per_s(self, bytes_per_s_max: int) -> int:
        """Step the share over the windows closed since the last call, then scale the cap
        (0 = unlimited stays unlimited, and is not paced)."""
        if bytes_per_s_max <= 0 or self.latency_factor == 0:
            return bytes_per_s_max
        closed, windows = self.latency.windows_after(self._seen)
        if closed > self._seen:
            by_index = {w.index: w for w in windows}
            first = max(self._seen + 1, closed - HISTORY_WINDOWS + 1)   # older windows no longer matter
            judged = [by_index.get(index) for index in range(first, closed + 1)]   # None: too few writes
            verdicts = [window is not None and slow(window, self.latency_factor) for window in judged]
            slow_ones = [window for window, is_slow in zip(judged, verdicts) if is_slow and window is not None]
            self._seen = closed
            before, self._share = self._share, next_share(self._share, verdicts)
            self._slow_windows += len(slow_ones)
            self._slow_unlogged += len(slow_ones)
            self._report(before, bytes_per_s_max, slow_ones[-1] if slow_ones else None)
        return max(1, int(bytes_per_s_max * self._share))

    def statistics(self) -> PacingStatistics:
        return PacingStatistics(self._share, self._slow_windows)

    def _report(self, before: float, bytes_per_s_max: int, last: LatencyWindow | None) -> None:
        """`last`: the latest slow window of this step, if any."""
        now_s = self.latency.clock()
        if self._share < before and last is not None and now_s - self._logged_s >= LOG_INTERVAL_S:
            logger.info("copies slowed to %d B/s (%.0f%% of repair_bytes_per_s): client write p90 %.1f ms, "
                        "usual %.1f ms (%d slow windows since the last line)",
                        int(bytes_per_s_max * self._share), 100 * self._share,
                        1000 * last.p90_s, 1000 * (last.usual_s or 0.0),
                        self._slow_unlogged)
            self._logged_s = now_s
            self._slow_unlogged = 0
        elif self._share == 1.0 and before < 1.0:
            logger.info("copies back to the full rate (%d B/s): client write latency is usual again", bytes_per_s_max)
